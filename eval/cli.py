"""``mmaccel eval {pope,mme,videomme}`` (also ``python -m mmaccel.eval``): accuracy and speed of the baseline and
of each preset on the same samples, in one run.

Examples::

    mmaccel eval pope --model shapes-image --data data/shapes/POPE --compare none,kernels --out runs/pope
    mmaccel eval videomme --model shapes-video --data data/shapes/Video-MME --out runs/videomme
    torchrun --nproc-per-node 2 -m mmaccel.eval mme --model llava-hf/llava-1.5-7b-hf --data MME --out runs/mme
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from ..config import ConfigError
from .common import DataLayoutError, Task
from .mme import Mme
from .pope import SPLITS, Pope
from .store import RunMismatchError
from .videomme import DEFAULT_FRAMES, VideoMme

TASKS: dict[str, type] = {"pope": Pope, "mme": Mme, "videomme": VideoMme}


def get_task(name: str) -> Task:
    """The task called ``name``; ``ValueError`` listing the tasks otherwise."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; allowed: {', '.join(TASKS)}")
    return TASKS[name]()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``mmaccel eval``."""
    from ..config import PRESETS
    from ..models import DEFAULT_MODEL

    parser.add_argument("task", choices=list(TASKS), help="the benchmark")
    parser.add_argument("--model", default=None,
                        help=f"a built-in name, a local directory or a Hub id (default: {DEFAULT_MODEL} for image "
                             f"tasks, shapes-video for videomme)")
    parser.add_argument("--data", required=True, type=Path,
                        help="local copy of the dataset repo (lmms-lab/POPE, lmms-lab/MME, lmms-lab/Video-MME) or "
                             "a generated set in the same layout")
    parser.add_argument("--out", required=True, type=Path,
                        help="run folder: predictions stream here, and a rerun with the same --out resumes")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--preset", help=f"evaluate one preset ({', '.join(PRESETS)})")
    which.add_argument("--config", help="evaluate one JSON config file")
    which.add_argument("--compare", help="comma-separated configurations run on the same samples, the first being "
                                         "the baseline the speedups are relative to, e.g. none,kernels "
                                         "(presets or JSON files)")
    parser.add_argument("--split", choices=SPLITS, help="POPE: one split of the Full config (default: the "
                                                        "pooled default config, scored per split)")
    parser.add_argument("--limit", type=int, help="first N samples of each category (POPE split, MME subtask "
                                                  "images, Video-MME duration)")
    parser.add_argument("--frames", type=int, help=f"Video-MME: frames sampled uniformly per video (default "
                                                   f"{DEFAULT_FRAMES}; the bundled video model's 8)")
    parser.add_argument("--max-new-tokens", type=int, help="default: lmms-eval's (POPE 128, MME 16, Video-MME 16)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (under torchrun: each rank's)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"],
                        help="auto = bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--warmup", type=int, default=1, help="untimed answers per configuration before timing")
    parser.add_argument("--no-memory", dest="memory", action="store_false",
                        help="skip peak-memory measurement (on CPU it costs a second, untimed generate)")
    parser.add_argument("--media-first", action="store_true",
                        help="prefill the image or video first, then read the question against the cache (as in a "
                             "chat or a stream): KV-cache compression then weighs on the first answer token too; "
                             "TTFT is the question's prefill")
    parser.add_argument("--retry-errors", action="store_true", help="on resume, retry samples recorded as errors")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")


def configuration_names(args: argparse.Namespace) -> list[str]:
    """The configurations to run, baseline first."""
    if args.compare:
        names = [n.strip() for n in args.compare.split(",") if n.strip()]
        if not names:
            raise ConfigError("--compare needs at least one configuration, e.g. none,kernels")
        return names
    return [args.config or args.preset or "none"]


def run(args: argparse.Namespace) -> int:
    """Evaluate as ``args`` says; print the table and write ``results.json`` and the plot (rank 0)."""
    from ..models import load_model, resolve_dtype
    from ..zoo.reference import VIDEO_FRAMES, reference_names
    from .report import format_table, plot_accuracy_vs_speedup, summarize, write_results
    from .runner import Configuration, RunOptions, Shard, evaluate

    task = get_task(args.task)
    model_name = args.model or ("shapes-video" if args.task == "videomme" else "shapes-image")
    frames = args.frames or (VIDEO_FRAMES if model_name in reference_names() else DEFAULT_FRAMES)
    configurations = [Configuration.parse(name) for name in configuration_names(args)]
    samples = task.load(args.data, limit=args.limit, split=args.split, frames=frames)
    max_new_tokens = args.max_new_tokens or task.max_new_tokens
    identity: dict[str, Any] = {
        "task": task.name, "model": model_name, "data": str(args.data.resolve()), "split": args.split,
        "limit": args.limit, "frames": frames if task.name == "videomme" else None, "max_new_tokens": max_new_tokens,
    }
    if args.media_first:  # only when set: runs made before the option existed still resume
        identity["media_first"] = True
    shard = Shard.from_environment()
    device = _device(args.device, shard)
    dtype = resolve_dtype(args.dtype, device)
    model, processor = load_model(model_name, device=device, dtype=dtype)
    options = RunOptions(max_new_tokens=max_new_tokens, warmup=args.warmup, measure_memory=args.memory,
                         retry_errors=args.retry_errors, progress=args.progress, media_first=args.media_first)
    try:
        merged = evaluate(model, processor, task, samples, configurations, args.out, identity, options, shard)
    finally:
        shard.close()
    if merged is None:
        return 0
    summary = summarize(task, merged)
    for configuration in configurations:
        summary["configurations"][configuration.name]["config"] = configuration.config.to_dict()
    summary["environment"] = {"device": str(device), "dtype": str(dtype).removeprefix("torch."),
                              "torch": torch.__version__, "world_size": shard.world_size}
    print(f"mmaccel eval {task.name}  model={model_name}  samples={len(samples)}  device={device}")
    print(format_table(task, summary))
    print(f"wrote {write_results(args.out, identity, summary)}")
    print(f"wrote {plot_accuracy_vs_speedup(task, summary, args.out / 'accuracy_vs_speedup.png')}")
    return 0


def _device(name: str, shard: Any) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{shard.local_rank}" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and shard.world_size > 1:
        return torch.device(f"cuda:{shard.local_rank}")
    return torch.device(name)


def main(argv: list[str] | None = None) -> int:
    """``python -m mmaccel.eval``; returns the exit code (2 for a usage or data error)."""
    from ..adapters import UnsupportedModelError
    from ..models import ModelLoadError

    parser = argparse.ArgumentParser(prog="mmaccel eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ConfigError, DataLayoutError, RunMismatchError, ModelLoadError, UnsupportedModelError) as err:
        print(f"mmaccel eval: error: {err}", file=sys.stderr)
        return 2

