"""Train a draft head for a target model: ``python -m mmaccel.spec.train --model shapes-image --out DIR``.

Self-distillation, as EAGLE and MSD train: the target answers fresh shapes-world prompts (greedy, ``--new-tokens``
tokens, end of text suppressed as ``mmaccel bench`` does), then reads each whole sequence once more to give its
final hidden states; the head learns, teacher-forced, to predict the next position's feature from this one's and
the next token (smooth L1 on features + 0.1 × cross-entropy of the target's LM head on them, on the answer's
positions), with uniform noise on its input features. The target stays frozen; only ``fc`` and the decoder layer
train. Deterministic for a seed; on CPU a few minutes for the bundled models.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from ..adapters import get_adapter
from .draft_head import DraftHead, encoder_features, visual_embeddings


@torch.no_grad()
def collect(model: Any, processor: Any, name: str, samples: int, new_tokens: int, seed: int) -> list[dict]:
    """Teacher sequences: tokens, the target's final hidden states, visual embeddings, where the answer starts."""
    from ..bench import _shapes_world_inputs

    adapter = get_adapter(model)
    data = []
    for index in range(samples):
        inputs = _shapes_world_inputs(name, processor, 1, seed + index)
        out = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        full = {**inputs, "input_ids": out, "attention_mask": torch.ones_like(out)}
        hidden = model(**full, output_hidden_states=True).hidden_states[-1][0]
        visual = visual_embeddings(adapter, out, encoder_features(model, inputs))
        visual = visual[0] if visual is not None else None
        data.append({"tokens": out[0], "features": hidden, "visual": visual, "start": inputs["input_ids"].shape[1]})
    return data


def head_loss(head: DraftHead, adapter: Any, sample: dict, noise: float, generator: torch.Generator
              ) -> torch.Tensor:
    """Teacher-forced loss of one sequence (see the module docstring)."""
    tokens, features, visual = sample["tokens"], sample["features"], sample["visual"]
    length = tokens.shape[0]
    inputs = features[:-1] + (torch.rand(features[:-1].shape, generator=generator) - 0.5) * 2 * noise
    positions = torch.arange(length - 1)[None]
    predicted = head(adapter, inputs[None], tokens[None, 1:], positions,
                     visual[None, 1:] if visual is not None else None)[0]
    # row r predicts F_{r+1} and, through the LM head, token r + 2: from the last prompt row on
    rows, token_rows = slice(sample["start"] - 1, length - 1), slice(sample["start"] - 1, length - 2)
    feature_loss = torch.nn.functional.smooth_l1_loss(predicted[rows], features[1:][rows])
    logits = adapter.model.get_output_embeddings()(predicted[token_rows])
    token_loss = torch.nn.functional.cross_entropy(logits, tokens[2:][token_rows])
    return feature_loss + 0.1 * token_loss


def train(model: Any, processor: Any, name: str, out: Path, samples: int, new_tokens: int, steps: int, lr: float,
          noise: float, seed: int) -> dict:
    """Collect, train, save ``out/draft_head.safetensors`` and ``out/draft_head_training.json``; returns the summary."""
    torch.manual_seed(seed)
    adapter = get_adapter(model)
    model.requires_grad_(False)
    start = time.perf_counter()
    data = collect(model, processor, name, samples, new_tokens, seed=10_000 + seed)
    held_out = collect(model, processor, name, max(4, samples // 10), new_tokens, seed=20_000 + seed)
    collected = time.perf_counter() - start
    head = DraftHead(adapter)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, betas=(0.9, 0.95))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data), generator=generator)
    history = []
    for step in range(steps):
        loss = head_loss(head, adapter, data[int(order[step % len(data)])], noise, generator)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 0.5)
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == steps - 1:
            history.append({"step": step, "loss": round(loss.item(), 4)})
            print(json.dumps(history[-1]), flush=True)
    head.eval()
    with torch.no_grad():
        top1 = [_next_token_accuracy(head, adapter, sample) for sample in held_out]
    summary = {"model": name, "samples": samples, "new_tokens": new_tokens, "steps": steps, "lr": lr,
               "noise": noise, "seed": seed, "collect_minutes": round(collected / 60, 1),
               "wall_minutes": round((time.perf_counter() - start) / 60, 1),
               "held_out_next_token_accuracy": round(sum(top1) / len(top1), 3), "history": history}
    head.save(out)
    (Path(out) / "draft_head_training.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _next_token_accuracy(head: DraftHead, adapter: Any, sample: dict) -> float:
    """Share of answer positions where the head's first draft token (from the target's real features) is the
    target's next token."""
    tokens, features, visual = sample["tokens"], sample["features"], sample["visual"]
    length = tokens.shape[0]
    predicted = head(adapter, features[None, :-1], tokens[None, 1:], torch.arange(length - 1)[None],
                     visual[None, 1:] if visual is not None else None)[0]
    guesses = adapter.model.get_output_embeddings()(predicted).argmax(-1)  # guesses[t]: token t + 2
    answer = slice(sample["start"] - 1, length - 2)
    return float((guesses[answer] == tokens[2:][answer]).float().mean())


def main(argv: list[str] | None = None) -> int:
    """Command line of the trainer."""
    from ..zoo import load

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shapes-image", help="a bundled model (shapes-image, shapes-video)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--samples", type=int, default=200, help="teacher sequences")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--noise", type=float, default=0.1, help="uniform noise on the head's input features")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, processor = load(args.model)
    summary = train(model, processor, args.model, args.out, args.samples, args.new_tokens, args.steps, args.lr,
                    args.noise, args.seed)
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
