"""The ``mmaccel`` command line: ``bench``, ``eval``, ``stream-bench``, ``demo``, ``presets``, ``config``."""

from __future__ import annotations

import argparse
import sys

from .config import PRESETS, AccelConfig, ConfigError


def _add_bench(sub: argparse._SubParsersAction) -> None:
    from .models import DEFAULT_MODEL, model_names

    p = sub.add_parser("bench", help="baseline vs accelerated on the same inputs, in one process",
                       description="Run the same inputs through the unpatched and the accelerated model and report "
                                   "TTFT, TPOT, tokens/s, peak memory, KV-cache bytes, visual tokens kept and "
                                   "whether tokens match.")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"a built-in name ({', '.join(model_names())}), a local directory, or a Hub id "
                        f"(default: {DEFAULT_MODEL})")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--preset", choices=list(PRESETS), help="preset for the accelerated side (default: kernels)")
    group.add_argument("--config", help="JSON config file for the accelerated side")
    p.add_argument("--samples", type=int, default=4, help="number of different inputs (default 4)")
    p.add_argument("--batch-size", type=int, default=1, help="rows per input, left padded (default 1)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="tokens generated per run (default 32)")
    p.add_argument("--stop-at-eos", action="store_true",
                   help="end each run where its answer ends, as in use, instead of forcing --max-new-tokens tokens "
                        "(then compare the latency per request)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per input and side (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per side before timing (default 1)")
    p.add_argument("--modality", choices=["image", "video", "audio"],
                   help="input modality (default: the model's first)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default auto)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"],
                   help="auto = bfloat16 on CUDA, float32 on CPU")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write machine-readable results to this path")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``mmaccel`` command."""
    parser = argparse.ArgumentParser(prog="mmaccel", description="Training-free acceleration for multimodal LLMs.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_bench(sub)
    from .eval.cli import add_arguments as add_eval_arguments

    add_eval_arguments(sub.add_parser(
        "eval", help="accuracy and speed on POPE, MME or Video-MME, baseline and presets side by side",
        description="Evaluate on a local copy of lmms-lab/POPE, lmms-lab/MME or lmms-lab/Video-MME (or a generated "
                    "set in their layout) with lmms-eval's prompts, parsing and metrics; every answer is timed and "
                    "streamed to --out, and a rerun resumes."))
    sub.add_parser("stream-bench", add_help=False,
                   help="carrier-token streaming vs dense: memory, ingest time and answer latency (see --help)")
    sub.add_parser("demo", add_help=False, help="the Gradio streaming video chat (see --help)")
    sub.add_parser("presets", help="list the named presets and what each trades")
    p = sub.add_parser("config", help="print a validated config as JSON")
    p.add_argument("--preset", default="none", choices=list(PRESETS))
    p.add_argument("--file", help="a JSON config file to validate instead of a preset")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``mmaccel`` command; returns the process exit code."""
    from .adapters import UnsupportedModelError
    from .eval.common import DataLayoutError
    from .eval.store import RunMismatchError
    from .models import ModelLoadError

    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("stream-bench", "demo"):  # their own parsers take the rest of the line
        from .demo import main as demo_main
        from .stream.bench import main as stream_bench_main

        return (stream_bench_main if argv[0] == "stream-bench" else demo_main)(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if args.command == "bench":
            from .bench import BenchArgs
            from .bench import main as bench_main

            fields = {k: v for k, v in vars(args).items() if k != "command"}
            return bench_main(BenchArgs(**fields))
        if args.command == "eval":
            from .eval.cli import run as eval_run

            return eval_run(args)
        if args.command == "presets":
            width = max(map(len, PRESETS)) + 1
            for name, preset in PRESETS.items():
                print(f"{name:<{width}} {preset['description']}")
            return 0
        if args.command == "config":
            config = AccelConfig.load(args.file) if args.file else AccelConfig.preset(args.preset)
            print(config.to_json())
            return 0
    except (ConfigError, DataLayoutError, RunMismatchError, ModelLoadError, UnsupportedModelError) as err:
        print(f"mmaccel: error: {err}", file=sys.stderr)
        return 2
    return 1
