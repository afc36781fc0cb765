"""Train a draft head for a target model: ``python -m mmaccel.spec.train --model shapes-image --out DIR``.

Self-distillation, as EAGLE and MSD train: the target answers fresh shapes-world prompts (greedy, ``--new-tokens``
tokens, end of text suppressed as ``mmaccel bench`` does), then reads each whole sequence once more to give its
final hidden states; the head learns, teacher-forced, to predict the next position's feature from this one's and
the next token (smooth L1 on features + 0.1 × cross-entropy of the target's LM head on them, on the answer's
positions), with uniform noise on its input features. With ``--unroll K`` it also learns from its own predicted
features, as it drafts: K - 1 more passes over the sequence, each row fed the previous pass's prediction and
attending to real features only up to where its draft would have started (EAGLE-3's training-time test,
:func:`unrolled_passes`). The target stays frozen; only ``fc`` and the decoder layer train. Deterministic for a
seed; on CPU a few minutes for the bundled models. The summary reports the held-out accuracy of each of the first
draft tokens (:func:`draft_token_accuracy`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from transformers import DynamicCache

from ..adapters import get_adapter
from .draft_head import DraftHead, encoder_features, head_positions, prompt_rope_positions, visual_embeddings

#: Draft positions whose held-out accuracy the trainer reports.
ACCURACY_DEPTH = 4


@torch.no_grad()
def collect(model: Any, processor: Any, name: str, samples: int, new_tokens: int, seed: int) -> list[dict]:
    """Teacher sequences: tokens, the target's final hidden states, visual embeddings, where the answer starts (and
    an M-RoPE target's prompt positions)."""
    from ..bench import _shapes_world_inputs

    adapter = get_adapter(model)
    data = []
    for index in range(samples):
        inputs = _shapes_world_inputs(name, processor, 1, seed + index)
        out = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        prompt = inputs["input_ids"]
        answer = out.shape[1] - prompt.shape[1]
        per_token = {k: torch.nn.functional.pad(v, (0, answer)) for k, v in inputs.items()  # e.g. media token types
                     if isinstance(v, torch.Tensor) and v.shape[:2] == prompt.shape and k != "input_ids"}
        full = {**inputs, **per_token, "input_ids": out, "attention_mask": torch.ones_like(out)}
        hidden = model(**full, output_hidden_states=True).hidden_states[-1][0]
        visual = visual_embeddings(adapter, out, encoder_features(model, inputs))
        visual = visual[0] if visual is not None else None
        data.append({"tokens": out[0], "features": hidden, "visual": visual, "start": prompt.shape[1],
                     "prompt_rope": prompt_rope_positions(adapter, prompt, inputs)})
    return data


def unrolled_mask(length: int, depth: int) -> torch.Tensor:
    """``(length, (depth + 1) * length)``: what row ``r`` of unrolled pass ``depth`` may attend to, the keys of
    passes ``0..depth`` side by side. It stands for a draft started after position ``r - depth``: the real-feature
    keys of pass 0 up to there, then one key from each later pass, the drafted positions ``r - depth + j``."""
    rows = torch.arange(length)[:, None]
    columns = torch.arange(length)[None, :]
    blocks = [columns <= rows - depth]
    blocks += [columns == rows - depth + step for step in range(1, depth + 1)]
    return torch.cat(blocks, dim=1)


def unrolled_passes(head: DraftHead, adapter: Any, sample: dict, inputs: torch.Tensor, unroll: int
                    ) -> list[torch.Tensor]:
    """The head's predictions ``(L - 1, h)`` over one sequence, pass by pass: pass 0 teacher-forced from
    ``inputs`` (the target's features, maybe noised), then ``unroll - 1`` passes in which each row's input feature
    is the previous pass's prediction for it, as when drafting several tokens (EAGLE-3's training-time test). Row
    ``r`` of pass ``k`` predicts ``F_{r+1}`` for a draft started ``k`` positions back: it sees real features up to
    there and its own chain's predicted ones after (:func:`unrolled_mask`)."""
    tokens, visual = sample["tokens"], sample["visual"]
    length = tokens.shape[0]
    positions = head_positions(sample.get("prompt_rope"), 0, length - 1, tokens.device)
    visual = visual[None, 1:] if visual is not None else None
    cache = DynamicCache() if unroll > 1 else None
    passes = []
    for depth in range(unroll):
        mask = unrolled_mask(length - 1, depth) if unroll > 1 else None
        passes.append(head(adapter, inputs[None], tokens[None, 1:], positions, visual, cache, mask)[0])
        inputs = torch.cat([inputs[:1], passes[-1][:-1]])  # row r's next input: this pass's prediction of F_r
    return passes


def head_loss(head: DraftHead, adapter: Any, sample: dict, noise: float, generator: torch.Generator,
              unroll: int = 1) -> torch.Tensor:
    """Loss of one sequence (see the module docstring), averaged over :func:`unrolled_passes`."""
    tokens, features = sample["tokens"], sample["features"]
    length = tokens.shape[0]
    inputs = features[:-1] + (torch.rand(features[:-1].shape, generator=generator) - 0.5) * 2 * noise
    lm_head = adapter.model.get_output_embeddings()
    total = inputs.new_zeros(())
    for depth, predicted in enumerate(unrolled_passes(head, adapter, sample, inputs, unroll)):
        # row r predicts F_{r+1} and, through the LM head, token r + 2: from `depth` rows after the last prompt
        # row on (a draft starts after a verified position)
        rows, token_rows = slice(sample["start"] - 1 + depth, length - 1), slice(sample["start"] - 1 + depth,
                                                                                length - 2)
        feature_loss = torch.nn.functional.smooth_l1_loss(predicted[rows], features[1:][rows])
        token_loss = torch.nn.functional.cross_entropy(lm_head(predicted[token_rows]), tokens[2:][token_rows])
        total = total + feature_loss + 0.1 * token_loss
    return total / unroll


def train(model: Any, processor: Any, name: str, out: Path, samples: int, new_tokens: int, steps: int, lr: float,
          noise: float, seed: int, unroll: int = 1) -> dict:
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
        loss = head_loss(head, adapter, data[int(order[step % len(data)])], noise, generator, unroll)
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
        accuracy = torch.tensor([draft_token_accuracy(head, adapter, sample, ACCURACY_DEPTH) for sample in held_out])
    by_position = [round(float(a), 3) for a in accuracy.mean(0)]
    summary = {"model": name, "samples": samples, "new_tokens": new_tokens, "steps": steps, "lr": lr,
               "noise": noise, "seed": seed, "collect_minutes": round(collected / 60, 1),
               "wall_minutes": round((time.perf_counter() - start) / 60, 1),
               "unroll": unroll, "held_out_next_token_accuracy": by_position[0],
               "held_out_draft_accuracy_by_position": by_position, "history": history}
    head.save(out)
    (Path(out) / "draft_head_training.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def draft_token_accuracy(head: DraftHead, adapter: Any, sample: dict, depth: int = 1) -> list[float]:
    """Per draft position ``1..depth``: the share of answer positions where the head's token there (its first
    from the target's real features, each later one from its own predicted features) is the target's."""
    tokens = sample["tokens"]
    length = tokens.shape[0]
    lm_head = adapter.model.get_output_embeddings()
    accuracy = []
    for step, predicted in enumerate(unrolled_passes(head, adapter, sample, sample["features"][:-1], depth)):
        guesses = lm_head(predicted).argmax(-1)  # guesses[t]: token t + 2
        answer = slice(sample["start"] - 1 + step, length - 2)
        accuracy.append(float((guesses[answer] == tokens[2:][answer]).float().mean()))
    return accuracy


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
    parser.add_argument("--unroll", type=int, default=1,
                        help="passes per sequence: 1 teacher-forced, more also train on the head's own predicted "
                             "features, as it drafts (see unrolled_passes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, processor = load(args.model)
    summary = train(model, processor, args.model, args.out, args.samples, args.new_tokens, args.steps, args.lr,
                    args.noise, args.seed, args.unroll)
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
