"""``mmaccel bench``: the same inputs through the unpatched and the accelerated model, in one process.

For each sample the model is restored (baseline) and accelerated in turn, so both sides share weights, inputs and
machine state. Per side it reports TTFT (time to the first new token: prefill), TPOT (time per later token: decode),
tokens/s (new tokens over the whole generate call), peak memory (CUDA: max allocated above the weights; CPU: peak of
live tensor bytes, from a separate untimed run), KV-cache bytes after generation, visual tokens in the prompt and
kept by the accelerated side, and whether the generated tokens match the baseline's exactly.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .compat import require_supported_transformers
from .config import AccelConfig
from .memory import tensor_bytes, track_peak_memory
from .patch import accelerate, get_state, restore
from .spec.stats import merged_acceptance

SIDES = ("baseline", "accelerated")


@dataclass
class RunResult:
    """Figures of one generate call."""

    ttft_s: float
    tpot_s: float
    tokens_per_s: float
    new_tokens: int
    latency_s: float
    kv_bytes: int
    visual_tokens: int
    visual_tokens_kept: int
    peak_memory_bytes: int = 0
    tokens: list[list[int]] = field(default_factory=list)


class TokenClock:
    """A generate ``streamer`` that timestamps each step and counts its tokens: the first ``put`` is the prompt,
    then one per decoding step (several tokens at once under speculative decoding)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.stamps: list[float] = []
        self.counts: list[int] = []
        self._seen_prompt = False

    def put(self, value: torch.Tensor) -> None:
        """Record the time and the number of tokens of one generated step (the prompt's ``put`` is skipped)."""
        if not self._seen_prompt:
            self._seen_prompt = True
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.stamps.append(time.perf_counter())
        self.counts.append(int(value.shape[-1]) if value.dim() else 1)

    def end(self) -> None:
        """Nothing to do at the end of generation."""


def timed_generate(model: Any, inputs: Any, **generate_kwargs: Any) -> tuple[Any, float, float, float]:
    """``model.generate(**inputs, **generate_kwargs)`` with a per-step clock. Returns the output, TTFT (start to
    the first new token: prefill), TPOT (decode time per token after the first step's; 0 when every token came in
    the first step, as speculative decoding can give a short answer) and the wall time to the last token, all in
    seconds."""
    device = next(model.parameters()).device
    clock = TokenClock(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = model.generate(**inputs, streamer=clock, **generate_kwargs)
    end = clock.stamps[-1] if clock.stamps else time.perf_counter()
    first = clock.stamps[0] if clock.stamps else end
    decoded = sum(clock.counts[1:])
    return out, first - start, (end - first) / max(1, decoded), end - start


def prefill_media(model: Any, inputs: Any) -> dict[str, Any]:
    """Prefill the prompt up to its last visual token, into a new cache; returns what ``generate`` then needs to
    read the rest of the prompt (the question) against that cache: the full ``input_ids`` and ``attention_mask`` and
    the ``cache``. The question thus arrives after the media are cached, as in a chat or a stream, so whatever the
    cache does to the media's keys and values (compression) weighs on the first answer token too."""
    from transformers import DynamicCache

    from .adapters import get_adapter

    state = get_state(model)
    adapter = state.adapter if state is not None else get_adapter(model)
    visual = adapter.visual_token_mask(inputs["input_ids"])
    if not visual.any():
        raise ValueError("prefill_media needs a prompt with image or video tokens; this one has none")
    # the token after the media too: the Qwen families close them with <|vision_end|>, which their M-RoPE index reads
    end = min(int(visual.any(dim=0).nonzero().max()) + 2, visual.shape[1])
    shape = inputs["input_ids"].shape
    per_token = [k for k, v in inputs.items() if isinstance(v, torch.Tensor) and v.dim() >= 2 and v.shape[:2] == shape]
    prefix = {k: (v[:, :end] if k in per_token else v) for k, v in inputs.items()}  # ids, mask, token types
    if not adapter.multimodal_rope:  # 1-D RoPE: left padding shifts positions as generate's do (M-RoPE: inside)
        prefix["position_ids"] = adapter.position_ids(prefix["input_ids"], prefix.get("attention_mask"))
    cache = DynamicCache(config=model.config.get_text_config())
    with torch.no_grad():
        model(**prefix, cache=cache, use_cache=True)
    return {**{k: inputs[k] for k in per_token}, "cache": cache}


def bench_inputs(model_name: str, processor: Any, num_samples: int, batch_size: int, modality: str | None,
                 seed: int) -> list[Any]:
    """``num_samples`` processed batches of ``batch_size`` rows for ``model_name``, each with different media."""
    from .models import TINY_PREFIX
    from .zoo.reference import reference_names
    from .zoo.tiny import sample_inputs

    samples = []
    for i in range(num_samples):
        if model_name.startswith(TINY_PREFIX):
            family = model_name[len(TINY_PREFIX):]
            samples.append(sample_inputs(family, processor, batch_size=batch_size, modality=modality, seed=seed + i))
        elif model_name in reference_names():
            samples.append(_shapes_world_inputs(model_name, processor, batch_size, seed + i))
        else:
            samples.append(_generic_inputs(processor, batch_size, modality or "image", seed + i))
    return samples


def _shapes_world_inputs(model_name: str, processor: Any, batch_size: int, seed: int) -> Any:
    """Questions about fresh shapes-world scenes (or videos, for ``shapes-video``), for the reference models."""
    import numpy as np

    from .zoo.world import render_scene, render_video, sample_scene, sample_video
    from .zoo.world.tasks import CAPTION_PROMPT, SHORT_ANSWER_PROMPT
    from .zoo.world.video_tasks import video_questions, videomme_prompt

    rng = np.random.default_rng(seed)
    if model_name == "shapes-video":
        size = processor.video_processor.crop_size["height"]
        videos = [sample_video(rng) for _ in range(batch_size)]
        questions = [video_questions(video, rng, count=1)[0] for video in videos]
        texts = [videomme_prompt(q.question, q.options) for q in questions]
        media = {"videos": [render_video(video, size=size, seed=seed) for video in videos]}
        kind = "video"
    else:
        size = processor.image_processor.crop_size["height"]
        scenes = [sample_scene(rng) for _ in range(batch_size)]
        texts = [CAPTION_PROMPT if row % 2 else f"Is there a {sorted(scenes[row].shapes_present())[0]} in the "
                 f"image?{SHORT_ANSWER_PROMPT}" for row in range(batch_size)]
        media = {"images": [render_scene(scene, size=size, seed=seed) for scene in scenes]}
        kind = "image"
    prompts = [processor.apply_chat_template([{"role": "user", "content": [{"type": kind},
                                                                            {"type": "text", "text": text}]}],
                                             add_generation_prompt=True) for text in texts]
    return processor(text=prompts, return_tensors="pt", padding=True, **media)


def _generic_inputs(processor: Any, batch_size: int, modality: str, seed: int) -> Any:
    """Chat-template inputs with synthetic media for a real model's processor."""
    from .zoo.tiny.common import chat_prompts, row_media

    if modality not in ("image", "video"):
        raise ValueError(f"bench modality {modality!r} is not supported for hub models; allowed: image, video")
    texts = chat_prompts(processor, modality, batch_size)
    media = row_media(modality, batch_size, seed * 31, image_sizes=[(336, 336)], video_shapes=[(8, 224, 224)])
    key = "images" if modality == "image" else "videos"
    return processor(text=texts, **{key: media}, return_tensors="pt", padding=True)


def visual_token_counts(model: Any, inputs: Any) -> tuple[int, int]:
    """Visual tokens in the prompt of ``inputs`` (all rows) and how many of them the accelerated model keeps (the
    same number when nothing prunes them)."""
    from .adapters import get_adapter

    state = get_state(model)
    adapter = state.adapter if state is not None else get_adapter(model)
    extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    layout = adapter.token_layout(inputs["input_ids"], inputs.get("attention_mask"), **extra)
    visual = int(layout.visual_mask.sum())
    kept = int(state.stats.get("visual_tokens_kept", visual)) if state is not None else visual
    return visual, kept


def run_once(model: Any, inputs: Any, max_new_tokens: int, measure_memory: bool, stop_at_eos: bool = False
             ) -> RunResult:
    """One greedy generate of exactly ``max_new_tokens`` tokens (with ``stop_at_eos``, up to them: the answer's
    own length), timed per step (or, with ``measure_memory``, untimed and with its peak memory measured)."""
    device = next(model.parameters()).device
    kwargs = dict(max_new_tokens=max_new_tokens, do_sample=False, return_dict_in_generate=True)
    if not stop_at_eos:
        kwargs["min_new_tokens"] = max_new_tokens
    ttft = tpot = tps = total = 0.0
    peak = 0
    if measure_memory:
        with track_peak_memory(device) as mem:
            out = model.generate(**inputs, **kwargs)
        peak = mem["peak_bytes"]
    else:
        out, ttft, tpot, total = timed_generate(model, inputs, **kwargs)
    new = out.sequences[:, inputs["input_ids"].shape[1]:]
    if not measure_memory:
        tps = new.numel() / total
    visual, kept = visual_token_counts(model, inputs)
    return RunResult(ttft_s=ttft, tpot_s=tpot, tokens_per_s=tps, new_tokens=new.shape[1], latency_s=total,
                     kv_bytes=tensor_bytes(out.cache), visual_tokens=visual, visual_tokens_kept=kept,
                     peak_memory_bytes=peak, tokens=new.tolist())


def _set_side(model: Any, side: str, config: AccelConfig, processor: Any = None) -> None:
    if side == "baseline":
        restore(model)
    else:
        accelerate(model, config, processor=processor)


def run_bench(model: Any, samples: list[Any], config: AccelConfig, max_new_tokens: int = 32, repeats: int = 3,
              warmup: int = 1, progress: bool = True, processor: Any = None, stop_at_eos: bool = False
              ) -> dict[str, Any]:
    """Benchmark baseline vs accelerated on ``samples``; returns per-sample results and a summary with ratios.
    ``processor`` is handed to :func:`~mmaccel.accelerate` (``contrast="code"`` needs it). Every run generates
    ``max_new_tokens`` tokens, so both sides decode the same number; with ``stop_at_eos`` a run ends where its answer
    does, as in use (then the sides may differ in length, and the latency per request is the figure to compare)."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    per_sample: list[dict[str, Any]] = []
    warmup_inputs = samples[0].to(device)
    for side in SIDES:
        _set_side(model, side, config, processor)
        for _ in range(warmup):
            run_once(model, warmup_inputs, max_new_tokens, False, stop_at_eos)
    bar = tqdm(samples, desc="bench", unit="sample", disable=not progress, file=sys.stderr)
    for index, inputs in enumerate(bar):
        inputs = inputs.to(device)
        record: dict[str, Any] = {"sample": index}
        for side in SIDES:
            _set_side(model, side, config, processor)
            speculative = _speculative_component(model)
            runs = [run_once(model, inputs, max_new_tokens, False, stop_at_eos) for _ in range(repeats)]
            acceptance = speculative.acceptance() if speculative is not None else None
            peak = run_once(model, inputs, max_new_tokens, True, stop_at_eos).peak_memory_bytes
            record[side] = {
                "ttft_s": [r.ttft_s for r in runs],
                "tpot_s": [r.tpot_s for r in runs],
                "tokens_per_s": [r.tokens_per_s for r in runs],
                "latency_s": [r.latency_s for r in runs],
                "new_tokens": runs[0].new_tokens,
                "kv_bytes": runs[0].kv_bytes,
                "visual_tokens": runs[0].visual_tokens,
                "visual_tokens_kept": runs[0].visual_tokens_kept,
                "peak_memory_bytes": peak,
                "tokens": runs[0].tokens,
                "speculation": acceptance,
            }
        record["tokens_match"] = record["baseline"]["tokens"] == record["accelerated"]["tokens"]
        per_sample.append(record)
    restore(model)
    return {"samples": per_sample, "summary": summarize(per_sample)}


def _speculative_component(model: Any) -> Any:
    """The accelerated model's speculative-decoding component, if it has one."""
    state = get_state(model)
    return next((c for c in state.components if c.name == "spec"), None) if state is not None else None


def summarize(per_sample: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over all timed runs, maxima of peak memory, and accelerated ÷ baseline ratios; with speculative
    decoding, the mean accepted length and the acceptance rates (overall, per draft position) over every
    verification step of the timed runs. TPOT is over the runs that produced tokens after their first step
    (``None`` when none did: every answer ended at once, or came whole in one step)."""
    summary: dict[str, Any] = {}
    for side in SIDES:
        rows = [s[side] for s in per_sample]
        decoding = [t for r in rows for t in r["tpot_s"] if t > 0]
        tpot = statistics.median(decoding) if decoding else None
        summary[side] = {
            "ttft_ms": 1e3 * statistics.median(t for r in rows for t in r["ttft_s"]),
            "tpot_ms": 1e3 * tpot if tpot else None,
            "decode_tokens_per_s": 1.0 / tpot if tpot else None,
            "tokens_per_s": statistics.median(t for r in rows for t in r["tokens_per_s"]),
            "latency_ms": 1e3 * statistics.median(t for r in rows for t in r["latency_s"]),
            "new_tokens": statistics.mean(r["new_tokens"] for r in rows),
            "peak_memory_mb": max(r["peak_memory_bytes"] for r in rows) / 2**20,
            "kv_cache_mb": statistics.median(r["kv_bytes"] for r in rows) / 2**20,
            "visual_tokens": statistics.mean(r["visual_tokens"] for r in rows),
            "visual_tokens_kept": statistics.mean(r["visual_tokens_kept"] for r in rows),
        }
    summary["ratio"] = {
        key: (summary["accelerated"][key] / summary["baseline"][key]
              if summary["baseline"][key] and summary["accelerated"][key] is not None else None)
        for key in summary["baseline"]
    }
    summary["tokens_match"] = sum(s["tokens_match"] for s in per_sample) / len(per_sample)
    speculation = [s["accelerated"].get("speculation") for s in per_sample]
    if all(speculation):
        merged = merged_acceptance(speculation)
        summary["mean_accepted_length"] = merged["mean_accepted_length"]
        summary["acceptance_rate"] = merged["acceptance_rate"]
        summary["acceptance_by_position"] = merged["acceptance_by_position"]
    return summary


_ROWS = [
    ("ttft_ms", "TTFT (ms)", "lower"),
    ("tpot_ms", "TPOT (ms)", "lower"),
    ("decode_tokens_per_s", "decode tokens/s", "higher"),
    ("tokens_per_s", "tokens/s", "higher"),
    ("latency_ms", "latency per request (ms)", "lower"),
    ("new_tokens", "new tokens per request", None),
    ("peak_memory_mb", "peak memory (MB)", "lower"),
    ("kv_cache_mb", "KV cache (MB)", "lower"),
    ("visual_tokens", "visual tokens in prompt", None),
    ("visual_tokens_kept", "visual tokens kept", "lower"),
]


def format_table(result: dict[str, Any], header: str = "") -> str:
    """The summary as an aligned text table; the last column is accelerated ÷ baseline."""
    summary = result["summary"]
    lines = [header] if header else []
    lines.append(f"{'metric':<26}{'baseline':>14}{'accelerated':>14}{'accel/base':>12}")
    for key, label, _better in _ROWS:
        base, acc, ratio = summary["baseline"][key], summary["accelerated"][key], summary["ratio"][key]
        ratio_text = f"{ratio:.3f}x" if ratio is not None else "-"
        lines.append(f"{label:<26}{_number(base):>14}{_number(acc):>14}{ratio_text:>12}")
    lines.append(f"{'tokens match baseline':<26}{'':>14}{summary['tokens_match'] * 100:>13.0f}%")
    if summary.get("mean_accepted_length") is not None:
        lines.append(f"{'mean accepted length':<26}{'':>14}{summary['mean_accepted_length']:>14.2f}")
        rates = summary.get("acceptance_by_position") or []
        if rates:
            shown = " ".join(f"{rate:.2f}" for rate in rates[:8]) + (" ..." if len(rates) > 8 else "")
            lines.append(f"{'acceptance by position':<26} {shown}")
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


@dataclass
class BenchArgs:
    """Command-line options of ``mmaccel bench``."""

    model: str
    preset: str | None = None
    config: str | None = None
    samples: int = 4
    batch_size: int = 1
    max_new_tokens: int = 32
    stop_at_eos: bool = False
    repeats: int = 3
    warmup: int = 1
    modality: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    seed: int = 0
    json: str | None = None
    progress: bool = True


def main(args: BenchArgs) -> int:
    """Run the benchmark described by ``args``, print the table and write ``--json`` if asked."""
    from .models import load_model, resolve_dtype

    require_supported_transformers()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    dtype = resolve_dtype(args.dtype, device)
    if args.config:
        config = AccelConfig.load(args.config)
        config_name = args.config
    else:
        config_name = args.preset or "kernels"
        config = AccelConfig.preset(config_name)
    model, processor = load_model(args.model, device=device, dtype=dtype, seed=args.seed)
    samples = bench_inputs(args.model, processor, args.samples, args.batch_size, args.modality, args.seed)
    result = run_bench(model, samples, config, max_new_tokens=args.max_new_tokens, repeats=args.repeats,
                       warmup=args.warmup, progress=args.progress, processor=processor,
                       stop_at_eos=args.stop_at_eos)
    header = (f"mmaccel bench  model={args.model}  device={device}  dtype={str(dtype).removeprefix('torch.')}  "
              f"config={config_name}  samples={args.samples}x{args.repeats}  batch={args.batch_size}  "
              f"new_tokens={'up to ' if args.stop_at_eos else ''}{args.max_new_tokens}")
    print(format_table(result, header))
    if args.json:
        payload = {"args": asdict(args), "device": str(device), "dtype": str(dtype), "config": config.to_dict(),
                   "torch": torch.__version__, **result}
        if device.type == "cuda":
            payload["gpu"] = torch.cuda.get_device_name(device)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}")
    return 0
