"""A minimal POPE scorer for the reference models' model cards, until the full eval harness lands in ``eval/``.

Reads the POPE-layout parquet files that ``mmaccel.zoo.world.build`` writes, asks each question with lmms-eval's
POPE prompt (greedy), parses answers the lmms-eval way (exact match after lowercasing and stripping) and reports,
per split: accuracy, precision, recall and F1 of "yes", the share of predictions that are "yes", and the
false-positive rate on absent objects (the room contrastive decoding has to work with).

``python -m mmaccel.zoo.score --model shapes-image --data data/shapes/POPE``
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch
from PIL import Image

POPE_POST_PROMPT = "\nAnswer the question using a single word or phrase."


def pope_metrics(predictions: list[str], answers: list[str]) -> dict[str, float]:
    """Accuracy, precision, recall, F1 (positive class "yes"), yes-ratio of predictions, and false-positive rate."""
    tp = sum(p == "yes" and a == "yes" for p, a in zip(predictions, answers, strict=True))
    fp = sum(p == "yes" and a == "no" for p, a in zip(predictions, answers, strict=True))
    fn = sum(p != "yes" and a == "yes" for p, a in zip(predictions, answers, strict=True))
    negatives = sum(a == "no" for a in answers)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "accuracy": sum(p == a for p, a in zip(predictions, answers, strict=True)) / len(answers),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "yes_ratio": sum(p == "yes" for p in predictions) / len(predictions),
        "false_positive_rate": fp / negatives if negatives else 0.0,
        "n": len(answers),
    }


@torch.no_grad()
def answer_questions(model: Any, processor: Any, rows: list[dict], batch_size: int = 16,
                     max_new_tokens: int = 8) -> list[str]:
    """Greedy answers to POPE rows, parsed as lmms-eval parses them (``lower().strip()``)."""
    predictions = []
    device = next(model.parameters()).device
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        prompts = []
        for row in chunk:
            content = [{"type": "image"}, {"type": "text", "text": row["question"].strip() + POPE_POST_PROMPT}]
            prompts.append(processor.apply_chat_template([{"role": "user", "content": content}],
                                                         add_generation_prompt=True))
        images = [Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB") for row in chunk]
        inputs = processor(text=prompts, images=images, return_tensors="pt", padding=True).to(device)
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        texts = processor.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        predictions.extend(text.lower().strip() for text in texts)
    return predictions


def score_pope(model: Any, processor: Any, folder: Path, limit: int | None = None) -> dict[str, dict[str, float]]:
    """Metrics per split of a POPE-layout folder (``Full/<split>-*.parquet``)."""
    results = {}
    for path in sorted((folder / "Full").glob("*.parquet")):
        rows = pq.read_table(path).to_pylist()[:limit]
        predictions = answer_questions(model, processor, rows)
        results[path.name.split("-")[0]] = pope_metrics(predictions, [row["answer"] for row in rows])
    return results


def main(argv: list[str] | None = None) -> int:
    """Command line of the scorer."""
    from ..models import load_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shapes-image")
    parser.add_argument("--data", required=True, help="a POPE-layout folder")
    parser.add_argument("--limit", type=int, help="questions per split")
    args = parser.parse_args(argv)
    model, processor = load_model(args.model)
    print(json.dumps(score_pope(model, processor, Path(args.data), args.limit), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
