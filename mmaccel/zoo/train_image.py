"""Train ``shapes-image`` from scratch on the shapes world, on CPU: ``python -m mmaccel.zoo.train_image --out DIR``.

Every step draws fresh scenes from a seeded stream (the held-out sets use other seeds), renders them, and trains on
multi-turn conversations in LLaVA-1.5's format, one image per conversation::

    USER: <image>×256 "\\n" q1 "\\nAnswer the question using a single word or phrase." " ASSISTANT:" " a1" </s>
    " USER: " q2 ... " ASSISTANT:" " a2" </s> ...

The loss is on answer tokens only. Questions mix existence (balanced yes/no, negatives drawn uniformly among absent
shapes, so the theme priors survive, as in real instruction data), colour, count and position yes/no questions and
captions. The run is deterministic for a given seed and step count.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .reference import build_shapes_image
from .world import SHAPES, Scene, render_scene, sample_scene
from .world.tasks import MME_SUFFIX, caption, mme_pair

POST_PROMPT = "\nAnswer the question using a single word or phrase."
CAPTION_PROMPT = "Describe the image."


def training_turns(scene: Scene, rng: np.random.Generator, num_turns: int) -> list[tuple[str, str]]:
    """``num_turns`` (question, answer) pairs about ``scene``; yes/no answers lowercase, as POPE's are."""
    turns: list[tuple[str, str]] = []
    while len(turns) < num_turns:
        kind = rng.choice(["existence", "existence", "color", "count", "position", "caption"])
        if kind == "caption":
            turns.append((CAPTION_PROMPT, caption(scene)))
            continue
        if kind == "existence":
            present = sorted(scene.shapes_present())
            absent = [s for s in SHAPES if s not in present]
            shape, answer = (rng.choice(present), "yes") if rng.random() < 0.5 else (rng.choice(absent), "no")
            turns.append((f"Is there a {shape} in the image?" + POST_PROMPT, answer))
            continue
        pair = mme_pair(scene, str(kind), rng)
        if pair is None:
            continue
        question, answer = pair[int(rng.integers(2))]
        turns.append((question.removesuffix(MME_SUFFIX) + POST_PROMPT, answer.lower()))
    return turns


def encode_conversation(tokenizer: Any, turns: list[tuple[str, str]], image_tokens: int) -> tuple[list[int],
                                                                                                    list[int]]:
    """Token ids and labels (``-100`` except on answers and their ``</s>``) of one conversation."""
    def text(value: str) -> list[int]:
        return tokenizer(value, add_special_tokens=False)["input_ids"]

    ids = text("USER: ") + [tokenizer.image_token_id] * image_tokens
    labels = [-100] * len(ids)
    for index, (question, answer) in enumerate(turns):
        prompt = text(("\n" if index == 0 else " USER: ") + question + " ASSISTANT:")
        reply = text(" " + answer) + [tokenizer.eos_token_id]
        ids += prompt + reply
        labels += [-100] * len(prompt) + reply
    return ids, labels


def make_batch(processor: Any, rng: np.random.Generator, batch_size: int, num_turns: int,
               image_tokens: int) -> dict[str, torch.Tensor]:
    """A right-padded training batch of fresh scenes."""
    tokenizer = processor.tokenizer
    images, sequences = [], []
    for _ in range(batch_size):
        scene = sample_scene(rng)
        images.append(render_scene(scene, size=processor.image_processor.crop_size["height"],
                                   seed=int(rng.integers(2**31))))
        sequences.append(encode_conversation(tokenizer, training_turns(scene, rng, num_turns), image_tokens))
    length = max(len(ids) for ids, _ in sequences)
    input_ids = torch.full((batch_size, length), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((batch_size, length), -100, dtype=torch.long)
    attention_mask = torch.zeros((batch_size, length), dtype=torch.long)
    for row, (ids, labs) in enumerate(sequences):
        input_ids[row, :len(ids)] = torch.tensor(ids)
        labels[row, :len(labs)] = torch.tensor(labs)
        attention_mask[row, :len(ids)] = 1
    pixel_values = processor.image_processor(images, return_tensors="pt")["pixel_values"]
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask, "pixel_values": pixel_values}


@torch.no_grad()
def quick_pope_accuracy(model: Any, processor: Any, seed: int, num_images: int = 40) -> float:
    """Accuracy on balanced existence questions about held-out scenes (a minimal scorer, exact-match parse)."""
    rng = np.random.default_rng(seed)
    model.eval()
    correct = total = 0
    for _ in range(num_images):
        scene = sample_scene(rng)
        image = render_scene(scene, size=processor.image_processor.crop_size["height"], seed=int(rng.integers(2**31)))
        present = sorted(scene.shapes_present())
        absent = [s for s in SHAPES if s not in present]
        for shape, truth in ((rng.choice(present), "yes"), (rng.choice(absent), "no")):
            content = [{"type": "image"}, {"type": "text", "text": f"Is there a {shape} in the image?" + POST_PROMPT}]
            prompt = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
            inputs = processor(text=[prompt], images=[image], return_tensors="pt")
            out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
            answer = processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
            correct += answer.strip().lower() == truth
            total += 1
    model.train()
    return correct / total


def train(out: Path, steps: int, batch_size: int, num_turns: int, lr: float, seed: int, eval_every: int,
          save_every: int = 0) -> dict:
    """Train and save to ``out``; returns the run's summary (also written to ``out/training.json``)."""
    torch.manual_seed(seed)
    model, processor = build_shapes_image(seed)
    image_tokens = model.config.image_seq_length
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model.train()
    history = []
    start = time.time()
    for step in range(steps):
        batch = make_batch(processor, rng, batch_size, num_turns, image_tokens)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        evaluate = bool(eval_every) and (step + 1) % eval_every == 0
        if step % 25 == 0 or step == steps - 1 or evaluate:
            record = {"step": step, "loss": round(loss.item(), 4), "minutes": round((time.time() - start) / 60, 2)}
            if evaluate:
                record["quick_pope_acc"] = quick_pope_accuracy(model, processor, seed=10_000 + step)
            history.append(record)
            print(json.dumps(record), flush=True)
        if save_every and (step + 1) % save_every == 0 and step != steps - 1:
            model.save_pretrained(out / "checkpoint")  # a long CPU run can be stopped without losing everything
    minutes = (time.time() - start) / 60
    final = quick_pope_accuracy(model, processor, seed=999_999, num_images=100)
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    if (out / "checkpoint").is_dir():
        shutil.rmtree(out / "checkpoint")
    summary = {"steps": steps, "batch_size": batch_size, "turns": num_turns, "lr": lr, "seed": seed,
               "wall_minutes": round(minutes, 1), "quick_pope_acc_heldout": final,
               "parameters": sum(p.numel() for p in model.parameters()), "history": history}
    (out / "training.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    """Command line of the trainer."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="where to save the model (save_pretrained layout)")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--turns", type=int, default=4, help="questions per conversation")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=500, help="steps between quick held-out checks (0: none)")
    parser.add_argument("--save-every", type=int, default=100, help="steps between checkpoints in OUT/checkpoint")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    summary = train(Path(args.out), args.steps, args.batch_size, args.turns, args.lr, args.seed, args.eval_every,
                    args.save_every)
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
