"""Where a generate call's time goes, unpatched and accelerated: ``python scripts/profile_generate.py --model M``.

Runs one warm-up and one profiled ``generate`` per side (torch.profiler, CPU and CUDA activities) on the same
input and prints, per side, the operators with the most self CPU time, how many device synchronisations and scalar
reads (``aten::_local_scalar_dense``: ``.item()``, ``bool(tensor)``) the call made, and the wall time. Written for
the GPU sessions, where the ``kernels`` preset's decode was slower end to end than the kernel benchmark explains
(see docs/gpu.md).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

import mmaccel
from mmaccel.bench import bench_inputs
from mmaccel.models import load_model, resolve_dtype

SYNC_EVENTS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "aten::_local_scalar_dense")


def main(argv: list[str] | None = None) -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="shapes-image")
    parser.add_argument("--preset", default="kernels")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--rows", type=int, default=20, help="operators listed per side")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    model, processor = load_model(args.model, device=device, dtype=resolve_dtype("auto", device), seed=0)
    inputs = bench_inputs(args.model, processor, 1, 1, None, 0)[0].to(device)
    kwargs = dict(max_new_tokens=args.max_new_tokens, min_new_tokens=args.max_new_tokens, do_sample=False)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    for side in ("none", args.preset):
        if side == "none":
            mmaccel.restore(model)
        else:
            mmaccel.accelerate(model, side)
        with torch.no_grad():
            model.generate(**inputs, **kwargs)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            with profile(activities=activities) as prof:
                model.generate(**inputs, **kwargs)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
            wall = time.perf_counter() - start
        events = prof.key_averages()
        syncs = {e.key: e.count for e in events if e.key in SYNC_EVENTS}
        print(f"\n=== {side}: {wall * 1000:.1f} ms for {args.max_new_tokens} tokens (profiled); syncs {syncs}")
        print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
