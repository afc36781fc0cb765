"""Minimal POPE and Video-MME scorers for the reference models' model cards, until the full eval harness lands in
``eval/``.

POPE: reads the POPE-layout parquet files that ``mmaccel.zoo.world.build`` writes, asks each question with
lmms-eval's POPE prompt (greedy), parses answers the lmms-eval way (exact match after lowercasing and stripping) and
reports, per split: accuracy, precision, recall and F1 of "yes", the share of predictions that are "yes", and the
false-positive rate on absent objects (the room contrastive decoding has to work with).

Video-MME: reads the Video-MME-layout set, samples ``--frames`` frames uniformly as lmms-eval does
(``np.linspace(0, n - 1, k, dtype=int)``, decoded with PyAV), asks with lmms-eval's prompt, takes the first A-D of
the answer, and reports accuracy overall, per duration and per task type (denominator: all questions).

``python -m mmaccel.zoo.score pope --model shapes-image --data data/shapes/POPE``
``python -m mmaccel.zoo.score videomme --model shapes-video --data data/shapes/Video-MME``
"""

from __future__ import annotations

import argparse
import io
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image

from .world.tasks import SHORT_ANSWER_PROMPT
from .world.video_tasks import videomme_prompt


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


def answer_questions(model: Any, processor: Any, rows: list[dict], batch_size: int = 16,
                     max_new_tokens: int = 8) -> list[str]:
    """Greedy answers to POPE rows, parsed as lmms-eval parses them (``lower().strip()``)."""
    images = [Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB") for row in rows]
    return answer_image_questions(model, processor, images, [row["question"] for row in rows], batch_size,
                                  max_new_tokens)


@torch.no_grad()
def answer_image_questions(model: Any, processor: Any, images: list[Any], questions: list[str],
                           batch_size: int = 16, max_new_tokens: int = 8) -> list[str]:
    """Greedy answers to one question per image, asked with lmms-eval's POPE prompt and parsed the lmms-eval way
    (``lower().strip()``)."""
    predictions = []
    device = next(model.parameters()).device
    for start in range(0, len(questions), batch_size):
        prompts = []
        for question in questions[start:start + batch_size]:
            content = [{"type": "image"}, {"type": "text", "text": question.strip() + SHORT_ANSWER_PROMPT}]
            prompts.append(processor.apply_chat_template([{"role": "user", "content": content}],
                                                         add_generation_prompt=True))
        inputs = processor(text=prompts, images=images[start:start + batch_size], return_tensors="pt",
                           padding=True).to(device)
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


def first_letter(text: str) -> str:
    """The first of A-D in ``text`` ("" if none): what Video-MME's extraction finds in a short answer."""
    match = re.search(r"[ABCD]", text)
    return match.group(0) if match else ""


def read_frames(path: Path, count: int) -> np.ndarray:
    """``count`` frames of the video at ``path``, sampled uniformly with both ends included, as lmms-eval does."""
    import av

    with av.open(str(path)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    return np.stack([frames[i] for i in np.linspace(0, len(frames) - 1, count, dtype=int)])


@torch.no_grad()
def answer_video_question(model: Any, processor: Any, frames: np.ndarray, question: str,
                          options: list[str] | tuple[str, ...], max_new_tokens: int = 16) -> str:
    """The letter (A-D, or "" if none) the model answers to a four-option question about ``frames``, asked with
    lmms-eval's Video-MME prompt (greedy)."""
    content = [{"type": "video"}, {"type": "text", "text": videomme_prompt(question, options)}]
    prompt = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    inputs = processor(text=[prompt], videos=[frames], return_tensors="pt").to(next(model.parameters()).device)
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return first_letter(processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))


def score_videomme(model: Any, processor: Any, folder: Path, frames: int = 8,
                   limit: int | None = None) -> dict[str, Any]:
    """Accuracy of a Video-MME-layout folder, overall, per duration and per task type."""
    rows = pq.read_table(next((folder / "videomme").glob("*.parquet"))).to_pylist()[:limit]
    groups: dict[str, list[bool]] = defaultdict(list)
    for row in rows:
        video = read_frames(folder / "data" / f"{row['videoID']}.mp4", frames)
        right = answer_video_question(model, processor, video, row["question"], row["options"]) == row["answer"]
        for key in ("overall", f"duration/{row['duration']}", f"task/{row['task_type']}"):
            groups[key].append(right)
    return {key: {"accuracy": sum(values) / len(values), "n": len(values)} for key, values in sorted(groups.items())}


def main(argv: list[str] | None = None) -> int:
    """Command line of the scorers."""
    from ..models import load_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=["pope", "videomme"])
    parser.add_argument("--model", help="default: shapes-image for pope, shapes-video for videomme")
    parser.add_argument("--data", required=True, help="a POPE- or Video-MME-layout folder")
    parser.add_argument("--limit", type=int, help="questions (per split for POPE)")
    parser.add_argument("--frames", type=int, default=8, help="frames sampled per video")
    args = parser.parse_args(argv)
    model, processor = load_model(args.model or ("shapes-image" if args.task == "pope" else "shapes-video"))
    if args.task == "pope":
        result: dict = score_pope(model, processor, Path(args.data), args.limit)
    else:
        result = score_videomme(model, processor, Path(args.data), args.frames, args.limit)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
