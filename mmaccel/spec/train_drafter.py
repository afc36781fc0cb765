"""Make a small drafter for a target model: ``python -m mmaccel.spec.train_drafter --model shapes-image --out DIR``.

The drafter is the target cut to its first ``--layers`` decoder layers, with the target's own encoders, projector,
embeddings, final norm and LM head (an early exit of the target, as LayerSkip drafts), so it is of the target's
family and class and reads the prompt's media with its own encoders, as ``spec="draft_model"`` requires. Cut, it
predicts the target's tokens poorly (its final norm and LM head expect the last layer's features), so it is then
distilled: the target answers prompts greedily (``--new-tokens`` tokens, end of text suppressed as ``mmaccel
bench`` does) and the kept layers and the final norm learn, teacher-forced, to predict each next token of the
target's answer (cross-entropy on the answer's positions, in float32 whatever the model's dtype); everything else stays
frozen. Prompts are fresh
shapes-world scenes for the bundled models, or ``--data FILE.jsonl`` for any model, in the format of
:mod:`mmaccel.spec.train` (its last tenth held out). The summary reports how often the drafter's next token is the
target's on the held-out answers (:func:`agreement`).

The result is a plain model of the target's class, saved with ``save_pretrained`` beside the target's processor:
``accelerate(model, spec={"method": "draft_model", "drafter": DIR})``. Saved as ``drafter/`` inside the target's
own folder, it is the default drafter of ``spec="draft_model"`` for that model (the bundled ``shapes-image`` has
one). Deterministic for a seed; a few minutes on CPU for the bundled models.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import torch

from ..adapters import get_adapter
from .draft_model import DRAFTER_FOLDER
from .train import _on, answered, load_target, training_prompts


def truncated_copy(model: Any, layers: int) -> Any:
    """A copy of ``model`` keeping only its first ``layers`` decoder layers (the config says so too, so that the
    copy saves and loads as a model of that depth); the other layers are not copied."""
    text_config = model.config.get_text_config()
    total = text_config.num_hidden_layers
    if not 1 <= layers <= total:
        raise ValueError(f"a drafter keeps 1 to {total} of the model's {total} decoder layers; got {layers}")
    stack = get_adapter(model).language_model
    all_layers = stack.layers
    stack.layers = torch.nn.ModuleList(all_layers[:layers])
    try:
        drafter = copy.deepcopy(model)
    finally:
        stack.layers = all_layers
    config = drafter.config.get_text_config()
    config.num_hidden_layers = layers
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = config.layer_types[:layers]
    return drafter


def answered_prompts(model: Any, prompts: list[Any], new_tokens: int) -> list[dict]:
    """Per prompt, its inputs with the target's greedy answer appended (:func:`~mmaccel.spec.train.answered`) and
    ``"start"``, where the answer starts; kept on the CPU."""
    sequences = []
    for inputs in prompts:
        full, start = answered(model, inputs, new_tokens)
        sequences.append({**_on(full, torch.device("cpu")), "start": start})
    return sequences


def answer_logits(drafter: Any, sequence: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The drafter's logits at the positions that predict the answer's tokens (float32), and those tokens."""
    dtype = next(drafter.parameters()).dtype
    inputs = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sequence.items() if k != "start"}
    start, tokens = sequence["start"], sequence["input_ids"][0]
    logits = drafter(**inputs, logits_to_keep=tokens.shape[0] - start + 1).logits[0, :-1].float()
    return logits, tokens[start:]


@torch.no_grad()
def agreement(drafter: Any, sequences: list[dict]) -> float:
    """The share of answer positions, over ``sequences`` teacher-forced, where the drafter's greedy next token is
    the target's."""
    device = next(drafter.parameters()).device
    right = total = 0
    for sequence in sequences:
        logits, tokens = answer_logits(drafter, _on(sequence, device))
        right += int((logits.argmax(-1) == tokens).sum())
        total += tokens.numel()
    return right / max(total, 1)


def train(model: Any, processor: Any, out: Path, data: list[dict], held_out: list[dict], layers: int, steps: int,
          lr: float, seed: int, about: dict | None = None, started: float | None = None) -> dict:
    """Cut ``model`` to ``layers`` decoder layers (:func:`truncated_copy`), distil it on ``data``
    (:func:`answered_prompts`), save it with ``processor`` and ``drafter_training.json`` in ``out``; returns the
    summary (``about`` added to it, the wall time counted from ``started``, a ``time.perf_counter()`` reading)."""
    torch.manual_seed(seed)
    start = time.perf_counter()
    started = start if started is None else started
    dtype = next(model.parameters()).dtype
    drafter = truncated_copy(model, layers).float()  # trained in float32, saved in the model's dtype
    device = next(drafter.parameters()).device
    drafter.requires_grad_(False)
    adapter = get_adapter(drafter)
    trained = [*adapter.decoder_layers, adapter.language_model.norm]
    parameters = [p for module in trained for p in module.parameters()]
    for parameter in parameters:
        parameter.requires_grad_(True)
    before = agreement(drafter.eval(), held_out)
    drafter.train()
    optimizer = torch.optim.AdamW(parameters, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    history = []
    for step in range(steps):
        logits, tokens = answer_logits(drafter, _on(data[int(order[step % len(data)])], device))
        loss = torch.nn.functional.cross_entropy(logits, tokens)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == steps - 1:
            history.append({"step": step, "loss": round(loss.item(), 4)})
            print(json.dumps(history[-1]), flush=True)
    drafter.eval().requires_grad_(False)
    summary = {**(about or {}), "layers": layers, "steps": steps, "lr": lr, "seed": seed, "sequences": len(data),
               "parameters": sum(p.numel() for p in drafter.parameters()),
               "train_minutes": round((time.perf_counter() - start) / 60, 1),
               "wall_minutes": round((time.perf_counter() - started) / 60, 1),
               "held_out_agreement_before": round(before, 3),
               "held_out_agreement": round(agreement(drafter, held_out), 3), "history": history}
    drafter.to(dtype).save_pretrained(out)
    processor.save_pretrained(out)
    (Path(out) / "drafter_training.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    """Command line of the drafter trainer."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shapes-image",
                        help="a bundled model (shapes-image, shapes-video), tiny-<family>, a folder or a Hub id")
    parser.add_argument("--out", type=Path, required=True,
                        help=f"where to save the drafter (MODEL_FOLDER/{DRAFTER_FOLDER} makes it the model's default)")
    parser.add_argument("--layers", type=int, default=1, help="decoder layers the drafter keeps")
    parser.add_argument("--data", type=Path, default=None,
                        help="JSON-lines prompts (see mmaccel.spec.train); without it, shapes-world prompts "
                             "(bundled models only)")
    parser.add_argument("--samples", type=int, default=400, help="teacher answers (shapes-world prompts)")
    parser.add_argument("--frames", type=int, default=8, help="frames sampled from each --data video")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"],
                        help="auto: bfloat16 on CUDA, float32 elsewhere")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    model, processor = load_target(parser, args)
    device = next(model.parameters()).device
    layers = model.config.get_text_config().num_hidden_layers
    if not 1 <= args.layers <= layers:
        parser.error(f"--layers must be 1 to {layers} (the model's decoder layers), got {args.layers}")
    start = time.perf_counter()
    prompts, held_out_prompts = training_prompts(args.model, processor, args.data, args.samples, args.frames,
                                                 args.seed)
    data = answered_prompts(model, prompts, args.new_tokens)
    held_out = answered_prompts(model, held_out_prompts, args.new_tokens)
    about = {"model": args.model, "data": str(args.data) if args.data else "shapes-world", "samples": len(prompts),
             "new_tokens": args.new_tokens, "device": str(device),
             "collect_minutes": round((time.perf_counter() - start) / 60, 1)}
    summary = train(model, processor, args.out, data, held_out, args.layers, args.steps, args.lr, args.seed, about,
                    start)
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
