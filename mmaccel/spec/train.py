"""Train a draft head for a target model: ``python -m mmaccel.spec.train --model shapes-image --out DIR``.

Self-distillation, as EAGLE and MSD train: the target answers prompts (greedy, ``--new-tokens`` tokens, end of text
suppressed as ``mmaccel bench`` does), then reads each whole sequence once more to give its final hidden states; the
head learns, teacher-forced, to predict the next position's feature from this one's and the next token (smooth L1
on features + 0.1 × cross-entropy of the target's LM head on them, on the answer's positions), with uniform noise on
its input features. With ``--unroll K`` it also learns from its own predicted features, as it drafts: K - 1 more
passes over the sequence, each row fed the previous pass's prediction and attending to real features only up to
where its draft would have started (EAGLE-3's training-time test, :func:`unrolled_passes`). The target stays
frozen; only ``fc`` and the decoder layer train (in float32, whatever the target's dtype).

Prompts: fresh shapes-world scenes for the bundled models, or ``--data FILE.jsonl`` for any model (one prompt per
line: ``{"text": ..., "image": PATH}``, ``{"text": ..., "video": PATH}`` or text alone; the last tenth is held
out). MSD's curriculum with ``--text-steps N``: N steps on text-only sequences (the file's text-only prompts, or
every prompt with its media removed), then the share of multimodal sequences rises linearly to all of them over
half the remaining steps; without it every sequence, text-only or not, is drawn alike. Deterministic for a seed;
on CPU a few minutes for the bundled models, ``--device cuda`` for real ones. The summary reports the held-out
accuracy of each of the first draft tokens (:func:`draft_token_accuracy`).
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


def shapes_world_prompts(name: str, processor: Any, count: int, seed: int) -> list[Any]:
    """``count`` processed prompts about fresh shapes-world scenes (videos for ``shapes-video``), seeds from
    ``seed``."""
    from ..bench import _shapes_world_inputs

    return [_shapes_world_inputs(name, processor, 1, seed + index) for index in range(count)]


def jsonl_prompts(path: Path, processor: Any, frames: int = 8) -> list[Any]:
    """The processed prompts of a JSON-lines file: per line ``"text"`` and at most one of ``"image"`` (a picture
    file) or ``"video"`` (a video file, ``frames`` frames sampled uniformly); paths are relative to the file."""
    from PIL import Image

    from ..eval.runner import build_inputs
    from ..eval.video import read_frames

    prompts = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}, line {number}: not a JSON object ({err})") from err
        keys = sorted(row) if isinstance(row, dict) else type(row).__name__
        media = [key for key in ("image", "video") if key in row] if isinstance(row, dict) else []
        if (not isinstance(row, dict) or not isinstance(row.get("text"), str) or len(media) > 1
                or set(row) - {"text", "image", "video"}):
            raise ValueError(f"{path}, line {number}: a prompt is {{\"text\": ...}} with at most one of "
                             f"\"image\" or \"video\" (a file path); got {keys}")
        if not media:
            turn = [{"role": "user", "content": [{"type": "text", "text": row["text"]}]}]
            prompt = processor.apply_chat_template(turn, add_generation_prompt=True, tokenize=False)
            prompts.append(processor(text=[prompt], return_tensors="pt"))
            continue
        file = Path(path).parent / row[media[0]]
        if not file.is_file():
            raise ValueError(f"{path}, line {number}: no {media[0]} file at {file}")
        loaded = Image.open(file).convert("RGB") if media[0] == "image" else read_frames(file, frames)
        prompts.append(build_inputs(processor, media[0], loaded, row["text"], torch.device("cpu")))
    if not prompts:
        raise ValueError(f"{path} holds no prompts")
    return prompts


def training_prompts(name: str, processor: Any, data: Path | None, samples: int, frames: int, seed: int
                     ) -> tuple[list[Any], list[Any]]:
    """The processed prompts to train on and those held out: ``data``'s (:func:`jsonl_prompts`, its last tenth
    held out) or, without it, ``samples`` fresh shapes-world prompts and a tenth as many (at least 4) held out."""
    if data is not None:
        prompts = jsonl_prompts(data, processor, frames)
        split = len(prompts) - max(1, len(prompts) // 10) if len(prompts) > 1 else len(prompts)
        return prompts[:split], prompts[split:] or prompts[-1:]
    return (shapes_world_prompts(name, processor, samples, 10_000 + seed),
            shapes_world_prompts(name, processor, max(4, samples // 10), 20_000 + seed))


@torch.no_grad()
def answered(model: Any, inputs: Any, new_tokens: int) -> tuple[dict, int]:
    """``inputs`` (on the model's device) with the model's greedy answer of ``new_tokens`` tokens appended
    (``input_ids``, the attention mask and every per-token input grown to the whole sequence, media inputs
    unchanged), and the prompt's length."""
    inputs = _on(dict(inputs), next(model.parameters()).device)
    out = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    prompt = inputs["input_ids"]
    answer = out.shape[1] - prompt.shape[1]
    per_token = {k: torch.nn.functional.pad(v, (0, answer)) for k, v in inputs.items()  # e.g. media token types
                 if isinstance(v, torch.Tensor) and v.shape[:2] == prompt.shape and k != "input_ids"}
    return {**inputs, **per_token, "input_ids": out, "attention_mask": torch.ones_like(out)}, prompt.shape[1]


@torch.no_grad()
def teacher_sequences(model: Any, prompts: list[Any], new_tokens: int) -> list[dict]:
    """Per prompt, the target's greedy answer read back whole: tokens, its final hidden states (float32), the visual
    embeddings (``None`` for a text-only prompt), where the answer starts, and an M-RoPE target's prompt positions;
    kept on the CPU (a training step moves its sequence to the model's device)."""
    adapter = get_adapter(model)
    device = next(model.parameters()).device
    data = []
    for prompt_inputs in prompts:
        inputs = _on(prompt_inputs, device)  # moved once: answered() finds them in place
        full, start = answered(model, inputs, new_tokens)
        out, prompt = full["input_ids"], inputs["input_ids"]
        hidden = model(**full, output_hidden_states=True).hidden_states[-1][0].float().cpu()
        visual = visual_embeddings(adapter, out, encoder_features(model, inputs))
        visual = visual[0].float().cpu() if visual is not None else None
        rope = prompt_rope_positions(adapter, prompt, inputs)
        data.append({"tokens": out[0].cpu(), "features": hidden, "visual": visual, "start": start,
                     "prompt_rope": rope.cpu() if rope is not None else None})
    return data


def text_only(prompts: list[Any], media_token_ids: set[int]) -> list[Any]:
    """The prompts with their media removed (placeholders and media inputs): MSD's text-only stage."""
    from ..contrast.branches import without_media

    return [without_media(dict(inputs), media_token_ids) for inputs in prompts]


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
    uniform = torch.rand(features[:-1].shape, generator=generator).to(features.device)  # (a CPU generator)
    inputs = features[:-1] + (uniform - 0.5) * 2 * noise
    lm_head = _float_lm_head(adapter)
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


def _float_lm_head(adapter: Any) -> Any:
    """The target's LM head on the head's float32 features, returning float32 logits (a half-precision target's
    LM head reads them in its own dtype rather than being copied to float32 at every step)."""
    lm_head = adapter.model.get_output_embeddings()
    return lambda features: lm_head(features.to(lm_head.weight.dtype)).float()


def curriculum_is_multimodal(step: int, steps: int, text_steps: int, generator: torch.Generator) -> bool:
    """MSD's curriculum: the first ``text_steps`` steps are text-only; then a step is multimodal with a probability
    rising linearly from 0 to 1 over half the remaining steps."""
    if step < text_steps:
        return False
    ramp = max(1, (steps - text_steps) // 2)
    return bool(torch.rand((), generator=generator) < (step - text_steps + 1) / ramp)


def train(model: Any, out: Path, data: list[dict], held_out: list[dict], steps: int, lr: float,
          noise: float, seed: int, unroll: int = 1, text_data: list[dict] | None = None, text_steps: int = 0,
          about: dict | None = None, started: float | None = None) -> dict:
    """Train a head on teacher sequences (:func:`teacher_sequences`; ``text_data`` the text-only ones of the
    curriculum, :func:`curriculum_is_multimodal`), save ``out/draft_head.safetensors`` and
    ``out/draft_head_training.json`` (``about`` added to it, and the wall time since ``started``, a
    ``time.perf_counter()`` reading, by default this call's start); returns the summary."""
    torch.manual_seed(seed)
    adapter = get_adapter(model)
    model.requires_grad_(False)
    start = time.perf_counter()
    started = start if started is None else started
    device = next(model.parameters()).device
    head = DraftHead(adapter).to(device)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, betas=(0.9, 0.95))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    curriculum = bool(text_steps and text_data and data)
    pools = {True: data, False: text_data} if curriculum else {True: data + (text_data or [])}
    orders = {kind: torch.randperm(len(pool), generator=generator) for kind, pool in pools.items()}
    drawn = dict.fromkeys(pools, 0)
    history = []
    for step in range(steps):
        multimodal = not curriculum or curriculum_is_multimodal(step, steps, text_steps, generator)
        pool = pools[multimodal]
        sample = pool[int(orders[multimodal][drawn[multimodal] % len(pool)])]
        drawn[multimodal] += 1
        loss = head_loss(head, adapter, _on(sample, device), noise, generator, unroll)
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
        accuracy = torch.tensor([draft_token_accuracy(head, adapter, _on(sample, device), ACCURACY_DEPTH)
                                 for sample in held_out])
    by_position = [round(float(a), 3) for a in accuracy.mean(0)]
    summary = {**(about or {}), "steps": steps, "lr": lr, "noise": noise, "seed": seed, "unroll": unroll,
               "text_steps": text_steps, "sequences": len(data), "text_sequences": len(text_data or []),
               "train_minutes": round((time.perf_counter() - start) / 60, 1),
               "wall_minutes": round((time.perf_counter() - started) / 60, 1),
               "held_out_next_token_accuracy": by_position[0],
               "held_out_draft_accuracy_by_position": by_position, "history": history}
    head.save(out)
    (Path(out) / "draft_head_training.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _on(sample: dict, device: torch.device) -> dict:
    """``sample`` with its tensors on ``device``."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in sample.items()}


def draft_token_accuracy(head: DraftHead, adapter: Any, sample: dict, depth: int = 1) -> list[float]:
    """Per draft position ``1..depth``: the share of answer positions where the head's token there (its first
    from the target's real features, each later one from its own predicted features) is the target's."""
    tokens = sample["tokens"]
    length = tokens.shape[0]
    lm_head = _float_lm_head(adapter)
    accuracy = []
    for step, predicted in enumerate(unrolled_passes(head, adapter, sample, sample["features"][:-1], depth)):
        guesses = lm_head(predicted).argmax(-1)  # guesses[t]: token t + 2
        answer = slice(sample["start"] - 1 + step, length - 2)
        accuracy.append(float((guesses[answer] == tokens[2:][answer]).float().mean()))
    return accuracy


def load_target(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[Any, Any]:
    """The ``(model, processor)`` a trainer's command line names (``--model``, ``--device``, ``--dtype``,
    ``--threads``); refuses a model other than a bundled one without ``--data``."""
    from ..models import load_model, resolve_dtype
    from ..zoo.reference import reference_names

    if args.data is None and args.model not in reference_names():
        parser.error(f"--model {args.model} is not a bundled model ({', '.join(reference_names())}): give --data "
                     "FILE.jsonl with its prompts")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    return load_model(args.model, device=device, dtype=resolve_dtype(args.dtype, device))


def main(argv: list[str] | None = None) -> int:
    """Command line of the trainer."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shapes-image",
                        help="a bundled model (shapes-image, shapes-video), tiny-<family>, a folder or a Hub id")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=None,
                        help="JSON-lines prompts (see above); without it, shapes-world prompts (bundled models only)")
    parser.add_argument("--samples", type=int, default=200, help="teacher sequences (shapes-world prompts)")
    parser.add_argument("--frames", type=int, default=8, help="frames sampled from each --data video")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--text-steps", type=int, default=0,
                        help="text-only steps first, then a rising share of multimodal ones (MSD's curriculum)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--noise", type=float, default=0.1, help="uniform noise on the head's input features")
    parser.add_argument("--unroll", type=int, default=1,
                        help="passes per sequence: 1 teacher-forced, more also train on the head's own predicted "
                             "features, as it drafts (see unrolled_passes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"],
                        help="the target's dtype (auto: bfloat16 on CUDA, float32 elsewhere); the head trains in "
                             "float32")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    model, processor = load_target(parser, args)
    device = next(model.parameters()).device
    start = time.perf_counter()
    prompts, held_out_prompts = training_prompts(args.model, processor, args.data, args.samples, args.frames,
                                                 args.seed)
    sequences = teacher_sequences(model, prompts, args.new_tokens)
    media, text = [s for s in sequences if s["visual"] is not None], [s for s in sequences if s["visual"] is None]
    if args.text_steps and not text:
        text = teacher_sequences(model, text_only(prompts, get_adapter(model).media_token_ids()), args.new_tokens)
    held_out = teacher_sequences(model, held_out_prompts, args.new_tokens)
    about = {"model": args.model, "data": str(args.data) if args.data else "shapes-world",
             "samples": len(prompts), "new_tokens": args.new_tokens, "device": str(device),
             "collect_minutes": round((time.perf_counter() - start) / 60, 1)}
    summary = train(model, args.out, media, held_out, args.steps, args.lr, args.noise, args.seed,
                    args.unroll, text, args.text_steps, about, start)
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
