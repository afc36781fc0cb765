"""What the reference-model trainers share: conversations in LLaVA's Vicuna format, padded batches, and the loop.

A training conversation is one image or video followed by several question/answer turns::

    USER: <media>×N "\\n" q1 " ASSISTANT:" " a1" </s> " USER: " q2 " ASSISTANT:" " a2" </s> ...

which is, token for token, what the processor's chat template gives at evaluation for the first turn. The loss is
on answers (and their ``</s>``) only.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def encode_conversation(tokenizer: Any, turns: list[tuple[str, str]], media_tokens: int,
                        media_token_id: int | None = None) -> tuple[list[int], list[int]]:
    """Token ids and labels (``-100`` except on answers and their ``</s>``) of one conversation about one image (or,
    with ``media_token_id`` set to the video token, one video) that takes ``media_tokens`` placeholder tokens."""
    def text(value: str) -> list[int]:
        return tokenizer(value, add_special_tokens=False)["input_ids"]

    media = tokenizer.image_token_id if media_token_id is None else media_token_id
    ids = text("USER: ") + [media] * media_tokens
    labels = [-100] * len(ids)
    for index, (question, answer) in enumerate(turns):
        prompt = text(("\n" if index == 0 else " USER: ") + question + " ASSISTANT:")
        reply = text(" " + answer) + [tokenizer.eos_token_id]
        ids += prompt + reply
        labels += [-100] * len(prompt) + reply
    return ids, labels


def answer_positions(labels: list[int]) -> list[int]:
    """Positions whose next-token prediction is the first token of an answer, one per turn, in order."""
    return [i - 1 for i in range(1, len(labels)) if labels[i] != -100 and labels[i - 1] == -100]


def pad_right(sequences: list[tuple[list[int], list[int]]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """``input_ids``, ``labels`` and ``attention_mask`` of right-padded ``(ids, labels)`` pairs."""
    length = max(len(ids) for ids, _ in sequences)
    input_ids = torch.full((len(sequences), length), pad_token_id, dtype=torch.long)
    labels = torch.full((len(sequences), length), -100, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, (ids, labs) in enumerate(sequences):
        input_ids[row, :len(ids)] = torch.tensor(ids)
        labels[row, :len(labs)] = torch.tensor(labs)
        attention_mask[row, :len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def warmup_cosine(steps: int, warmup_fraction: float = 0.05, floor: float = 0.1) -> Callable[[int], float]:
    """Learning-rate multiplier: linear warm-up, then cosine decay to ``floor``."""
    warmup = max(1, int(steps * warmup_fraction))

    def multiplier(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return multiplier


def train_loop(model: Any, parameters: list[torch.nn.Parameter], next_batch: Callable[[], dict[str, Any]],
               losses: Callable[[dict[str, Any]], dict[str, torch.Tensor]], *, steps: int, lr: float, out: Path,
               evaluate: Callable[[int], dict[str, float]] | None = None, eval_every: int = 0,
               save_every: int = 0, log_every: int = 25) -> tuple[list[dict], float]:
    """AdamW over ``parameters`` for ``steps`` steps of ``sum(losses(next_batch()).values())``; logs every
    ``log_every`` steps as JSON lines, runs ``evaluate(step)`` every ``eval_every`` steps and saves the model to
    ``out/checkpoint`` every ``save_every`` steps (a long CPU run can be stopped without losing everything).
    Returns the log and the wall time in minutes."""
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(steps))
    model.train()
    history: list[dict] = []
    start = time.time()
    for step in range(steps):
        parts = losses(next_batch())
        sum(parts.values()).backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        due = evaluate is not None and bool(eval_every) and (step + 1) % eval_every == 0
        if step % log_every == 0 or step == steps - 1 or due:
            record: dict[str, Any] = {"step": step, **{k: round(v.item(), 4) for k, v in parts.items()},
                                      "minutes": round((time.time() - start) / 60, 2)}
            if due:
                model.eval()
                with torch.no_grad():
                    record.update(evaluate(step))
                model.train()
            history.append(record)
            print(json.dumps(record), flush=True)
        if save_every and (step + 1) % save_every == 0 and step != steps - 1:
            model.save_pretrained(out / "checkpoint")
    minutes = (time.time() - start) / 60
    model.eval()
    return history, minutes


def save_model(model: Any, processor: Any, out: Path, summary: dict) -> None:
    """Save ``model`` and ``processor`` to ``out`` (``save_pretrained`` layout), drop the checkpoint, write
    ``training.json``."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    if (out / "checkpoint").is_dir():
        shutil.rmtree(out / "checkpoint")
    (out / "training.json").write_text(json.dumps(summary, indent=2) + "\n")


def train_in_rounds(train: Callable[..., dict], out: Path, rounds: tuple[dict, ...], first_init: Path | None = None,
                    keep_rounds: bool = False, **common: Any) -> dict:
    """Run ``train(folder, init=..., **common, **round)`` for each of ``rounds`` in turn, each continuing the
    previous one (the first from ``first_init``), saving round N to ``out/round-N`` and the last to ``out``.

    A round whose folder already holds a ``training.json`` is not run again, so a stopped recipe resumes at the round
    it was in. The summary of each round (without its step logs) is kept in ``out/training.json`` under ``"rounds"``,
    with ``"wall_minutes_all_rounds"``; the rounds' folders are removed at the end unless ``keep_rounds``."""
    init, summaries = first_init, []
    for index, round_args in enumerate(rounds):
        last = index == len(rounds) - 1
        folder = out if last else out / f"round-{index + 1}"
        done = folder / "training.json"
        if done.is_file() and not last:
            summary = json.loads(done.read_text())
        else:
            summary = train(folder, init=init, **{**common, **round_args})
        summaries.append({k: v for k, v in summary.items()
                          if not k.endswith("history") and k not in ("rounds", "wall_minutes_all_rounds")})
        init = folder
    summary["rounds"] = summaries
    summary["wall_minutes_all_rounds"] = round(sum(s["wall_minutes"] for s in summaries), 1)
    (out / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    if not keep_rounds:
        for index in range(len(rounds) - 1):
            shutil.rmtree(out / f"round-{index + 1}")
    return summary
