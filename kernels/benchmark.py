"""Benchmark of mmaccel's Triton attention vs torch SDPA and the reference: ``python -m mmaccel.kernels.benchmark``.

Shapes are those of a 7-8B GQA model (Hq=32, Hkv=8, D=128), fp16 and bf16:

* prefill: B=1, causal, Lq = Lk in 1024 / 4096 / 16384; one MHA row (Hkv=32); one row with a boolean left-padding
  mask (B=2, the mask path transformers takes for padded batches);
* decode: Lq=1 against a cache of Lk in 1024 / 4096 / 16384 / 65536 keys, batch 1 and 8;
* sparse prefill (``sparse25``, ``sparse50``): the sparse-prefill kernel keeping 25 % / 50 % of the keys (a random
  ascending set per key/value head), against dense causal SDPA over all keys (the work it replaces); its error is
  measured against the sparse reference instead of SDPA.
* quantized decode (``qdecode``): Lq=1 over a mixed-precision cache of Lk tokens (all but the last 32 packed, 60 %
  at 4 bits and 40 % at 2, blocks of 32, random codes and statistics), against SDPA decode over a dense cache of the
  same length (the work it replaces); error against the quantized reference; the rate counts the bytes the kernel
  reads (packed segments and window).

Each row reports milliseconds (median of ``triton.testing.do_bench``) for ours, SDPA and the reference (skipped where
the reference would need more than ``--ref-gb`` GB), achieved TFLOP/s (prefill; causal counts half the matrix) or
GB/s of K/V read (decode), the ratio SDPA time / ours (> 1: ours is faster), and the max abs difference of ours from
SDPA (over query rows that may attend to something). SDPA runs its flash backend with ``enable_gqa=True`` where it
can, else the efficient/cuDNN backends on K/V repeated beforehand (repeat not timed); the row says which.
A failing row prints its error and the run goes on. ``--json PATH`` writes every row. ``--smoke`` runs two tiny
rows on any device (CPU: Triton's interpreter, timed with a wall clock) to check the script itself.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .attention import attention_triton
from .attention_reference import attention_reference
from .quantized_attention import quantized_attention_triton
from .quantized_attention_reference import QuantizedSegment, quantized_attention_reference
from .sparse_attention import sparse_attention_triton
from .sparse_attention_reference import sparse_attention_reference

# (kind, batch, q_heads, kv_heads, head_dim, kv_len, left_pad)
PREFILL = [("prefill", 1, 32, 8, 128, n, 0) for n in (1024, 4096, 16384)] + [
    ("prefill", 1, 32, 32, 128, 4096, 0),
    ("prefill-mask", 2, 32, 8, 128, 4096, 512),
]
DECODE = [("decode", b, 32, 8, 128, n, 0) for b in (1, 8) for n in (1024, 4096, 16384, 65536)]
SPARSE = [(f"sparse{d}", 1, 32, 8, 128, n, 0) for n in (4096, 16384) for d in (25, 50)]
QDECODE = [("qdecode", b, 32, 8, 128, n, 0) for b in (1, 8) for n in (4096, 16384, 65536)]
SMOKE = [("prefill", 1, 4, 2, 32, 40, 0), ("prefill-mask", 2, 4, 2, 32, 24, 5), ("decode", 2, 4, 2, 32, 70, 0),
         ("sparse50", 1, 4, 2, 32, 40, 0), ("qdecode", 2, 4, 2, 32, 96, 0)]
#: The quantized-decode rows' cache: full-precision window, block size, salient tokens per block, bit widths.
Q_WINDOW, Q_BLOCK, Q_SALIENT, Q_BITS = 32, 32, 19, (4, 2)


def _random_segments(batch: int, kv_heads: int, head_dim: int, packed: int, device: torch.device
                     ) -> list[QuantizedSegment]:
    """Packed segments of ``packed`` tokens (whole blocks) with random codes and plausible statistics."""
    gen = torch.Generator(device=device).manual_seed(2)
    blocks = packed // Q_BLOCK
    segments = []
    for per_block, bits in ((Q_SALIENT, Q_BITS[0]), (Q_BLOCK - Q_SALIENT, Q_BITS[1])):
        tokens = blocks * per_block
        codes = [torch.randint(0, 256, (batch, kv_heads, tokens, head_dim * bits // 8), device=device,
                               dtype=torch.uint8, generator=gen) for _ in range(2)]
        stats = [torch.rand(batch, kv_heads, blocks, head_dim, device=device, generator=gen).half()
                 for _ in range(3)]
        token_stats = [torch.rand(batch, kv_heads, tokens, device=device, generator=gen).half() for _ in range(2)]
        start = torch.arange(blocks, device=device).repeat_interleave(per_block) * Q_BLOCK
        positions = (start + torch.arange(tokens, device=device) % per_block).to(torch.int32)
        segments.append(QuantizedSegment(bits, per_block, codes[0], stats[0] - 0.5, stats[1] / 4, codes[1],
                                         stats[2] + 0.5, token_stats[0] - 0.5, token_stats[1] / 4,
                                         positions.expand(batch, kv_heads, tokens).contiguous()))
    return segments



def _key_set(batch: int, kv_heads: int, kv_len: int, density: float, device: torch.device
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """A random ascending set of ``density * kv_len`` key positions per (batch, kv head), and its counts."""
    gen = torch.Generator(device=device).manual_seed(1)
    kept = max(1, round(density * kv_len))
    order = torch.rand(batch, kv_heads, kv_len, device=device, generator=gen).argsort(-1)[..., :kept]
    index = order.sort(-1).values.to(torch.int32)
    return index, torch.full((batch, kv_heads), kept, device=device, dtype=torch.int32)


def _timer(device: torch.device):
    """``time(fn) -> ms``: ``triton.testing.do_bench`` median on CUDA, a wall-clock median elsewhere."""
    if device.type == "cuda":
        import triton.testing

        return lambda fn: triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")

    def wall(fn):
        fn()
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times)

    return wall


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, causal: bool):
    """``(fn, label)``: a zero-argument SDPA call returning ``(B, Lq, Hq, D)``, on the fastest backend that runs."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    group = q.shape[1] // k.shape[1]
    is_causal = causal and mask is None
    tries = []
    if q.device.type == "cuda":
        tries.append(("flash+gqa", [SDPBackend.FLASH_ATTENTION], k, v, True))
        if group > 1:
            k_rep, v_rep = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
            tries.append(("efficient/cudnn+repeat", [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION],
                          k_rep, v_rep, False))
        else:
            tries.append(("efficient/cudnn", [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION], k, v, False))
    tries.append(("math+gqa", [SDPBackend.MATH], k, v, group > 1))
    errors = []
    for label, backends, keys, values, gqa in tries:
        def call(backends=backends, keys=keys, values=values, gqa=gqa):
            with sdpa_kernel(backends):
                out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, is_causal=is_causal,
                                                     enable_gqa=gqa)
            return out.transpose(1, 2)

        try:
            call()
        except RuntimeError as err:  # that backend does not take these inputs
            errors.append(f"{label}: {str(err).splitlines()[0]}")
            continue
        return call, label
    raise RuntimeError("no SDPA backend ran: " + "; ".join(errors))


def _inputs(kind: str, batch: int, q_heads: int, kv_heads: int, head_dim: int, kv_len: int, left_pad: int,
            dtype: torch.dtype, device: torch.device):
    gen = torch.Generator(device=device).manual_seed(0)
    q_len = 1 if kind in ("decode", "qdecode") else kv_len
    q = torch.randn(batch, q_heads, q_len, head_dim, device=device, dtype=dtype, generator=gen)
    k = torch.randn(batch, kv_heads, kv_len, head_dim, device=device, dtype=dtype, generator=gen)
    v = torch.randn(batch, kv_heads, kv_len, head_dim, device=device, dtype=dtype, generator=gen)
    mask = None
    if kind == "prefill-mask":  # transformers' sdpa_mask for a batch whose row 0 is left-padded
        keep = torch.ones(batch, kv_len, dtype=torch.bool, device=device)
        keep[0, :left_pad] = False
        causal = torch.ones(q_len, kv_len, dtype=torch.bool, device=device).tril(kv_len - q_len)
        mask = (causal[None] & keep[:, None, :])[:, None]  # (B, 1, Lq, Lk)
    return q, k, v, mask


def run_row(kind: str, batch: int, q_heads: int, kv_heads: int, head_dim: int, kv_len: int, left_pad: int,
            dtype: torch.dtype, device: torch.device, ref_gb: float) -> dict[str, Any]:
    """Time and check one shape; returns the row (raises on failure)."""
    q, k, v, mask = _inputs(kind, batch, q_heads, kv_heads, head_dim, kv_len, left_pad, dtype, device)
    q_len = q.shape[2]
    causal = kind not in ("decode", "qdecode")
    timer = _timer(device)
    row: dict[str, Any] = {"kind": kind, "dtype": str(dtype).removeprefix("torch."), "batch": batch,
                           "q_heads": q_heads, "kv_heads": kv_heads, "head_dim": head_dim, "q_len": q_len,
                           "kv_len": kv_len}

    sparse = kind.startswith("sparse")
    index, count = _key_set(batch, kv_heads, kv_len, int(kind.removeprefix("sparse")) / 100, device) if sparse \
        else (None, None)

    quantized = kind == "qdecode"
    packed = (kv_len - Q_WINDOW) // Q_BLOCK * Q_BLOCK if quantized else 0
    segments = _random_segments(batch, kv_heads, head_dim, packed, device) if quantized else []
    window_k, window_v = k[:, :, packed:], v[:, :, packed:]

    def ours():
        if sparse:
            return sparse_attention_triton(q, k, v, index, count, causal=causal)
        if quantized:
            return quantized_attention_triton(q, segments, window_k, window_v)
        return attention_triton(q, k, v, mask, causal=causal)

    def reference():
        if sparse:
            return sparse_attention_reference(q, k, v, index, count, causal=causal)
        if quantized:
            return quantized_attention_reference(q, segments, window_k, window_v)
        return attention_reference(q, k, v, mask, causal=causal)

    sdpa, row["sdpa_impl"] = _sdpa(q, k, v, mask, causal)
    # the reference's float32 scores, weights and repeated K/V
    ref_bytes = 4 * batch * q_heads * (3 * q_len * kv_len + 2 * kv_len * head_dim)
    fits = ref_bytes <= ref_gb * 1e9
    got = ours().float()
    against_reference = sparse or quantized  # these compute something else than dense SDPA
    want = reference().float() if against_reference and fits else (None if against_reference else sdpa().float())
    valid = torch.ones(batch, q_len, dtype=torch.bool, device=device)
    if mask is not None:
        valid = mask.any(-1).any(1)  # (B, Lq): rows with no allowed key are NaN or 0 depending on SDPA's backend
    row["max_abs_err_vs_sdpa"] = float("nan") if want is None else (got - want).abs()[valid].max().item()

    row["ours_ms"] = timer(ours)
    row["sdpa_ms"] = timer(sdpa)
    row["sdpa_over_ours"] = row["sdpa_ms"] / row["ours_ms"]
    if fits:
        row["ref_ms"] = timer(reference)
        row["ref_over_ours"] = row["ref_ms"] / row["ours_ms"]
    else:
        row["ref_ms"] = None  # would not fit the budget
    if kind == "decode":
        kv_bytes = 2 * k.numel() * k.element_size()
        row["rate"], row["unit"] = kv_bytes / row["ours_ms"] / 1e6, "GB/s"
    elif quantized:
        read = sum(t.numel() * t.element_size() for s in segments for t in s.tensors()[:7])
        read += 2 * window_k.numel() * window_k.element_size()
        row["rate"], row["unit"] = read / row["ours_ms"] / 1e6, "GB/s"
    else:
        visible = (q_len * kv_len - q_len * (q_len - 1) / 2) if q_len == kv_len else q_len * kv_len
        if sparse:
            visible *= int(kind.removeprefix("sparse")) / 100
        flops = 4 * batch * q_heads * visible * head_dim
        row["rate"], row["unit"] = flops / row["ours_ms"] / 1e9, "TFLOP/s"
    return row


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


HEADER = (f"{'kind':<13}{'dtype':<9}{'B':>3}{'Hq':>4}{'Hkv':>4}{'D':>5}{'Lk':>7}{'ours ms':>10}{'sdpa ms':>10}"
          f"{'ref ms':>10}{'sdpa/ours':>10}{'rate':>16}{'err':>10}  sdpa backend")


def _line(row: dict[str, Any]) -> str:
    return (f"{row['kind']:<13}{row['dtype']:<9}{row['batch']:>3}{row['q_heads']:>4}{row['kv_heads']:>4}"
            f"{row['head_dim']:>5}{row['kv_len']:>7}{_fmt(row['ours_ms'], '10.3f')}{_fmt(row['sdpa_ms'], '10.3f')}"
            f"{_fmt(row.get('ref_ms'), '10.3f')}{_fmt(row['sdpa_over_ours'], '10.2f')}"
            f"{row['rate']:>9.1f} {row['unit']:<6}{_fmt(row['max_abs_err_vs_sdpa'], '10.1e')}  {row['sdpa_impl']}")


def main(argv: list[str] | None = None) -> int:
    """Run every row, print a table, write ``--json`` if given. Returns 1 when a row failed, 0 otherwise."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="write the rows (and failures) to this path")
    parser.add_argument("--dtypes", default="float16,bfloat16", help="comma-separated torch dtypes")
    parser.add_argument("--only", choices=("prefill", "decode", "sparse", "qdecode"), help="run only these rows")
    parser.add_argument("--ref-gb", type=float, default=12.0, help="skip the reference above this memory estimate")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, any device (CPU: Triton interpreter)")
    args = parser.parse_args(argv)

    if args.smoke and not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        print("--smoke on CPU needs TRITON_INTERPRET=1 in the environment (Triton's interpreter)")
        return 2
    if args.smoke:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        shapes = SMOKE
    elif torch.cuda.is_available():
        device = torch.device("cuda")
        groups = (("prefill", PREFILL), ("decode", DECODE), ("sparse", SPARSE), ("qdecode", QDECODE))
        shapes = [row for group, rows in groups if args.only in (None, group) for row in rows]
    else:
        print("the kernel benchmark needs a CUDA GPU (or --smoke to check the script on CPU)")
        return 2

    import triton

    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu (Triton interpreter)"
    print(f"{name}  torch {torch.__version__}  triton {triton.__version__}")
    print(HEADER)
    rows, failures = [], []
    for dtype_name in args.dtypes.split(","):
        dtype = getattr(torch, dtype_name.strip())
        if device.type == "cpu" and dtype == torch.bfloat16:
            print("bfloat16: skipped on CPU (the Triton interpreter's bf16 dot is wrong)")
            continue
        for shape in shapes:
            try:
                row = run_row(*shape, dtype, device, args.ref_gb)
            except Exception as err:  # keep going: one bad shape must not hide the others
                kind, batch, q_heads, kv_heads, head_dim, kv_len, _ = shape
                message = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
                print(f"{kind:<13}{dtype_name:<9}{batch:>3}{q_heads:>4}{kv_heads:>4}{head_dim:>5}{kv_len:>7}  "
                      f"FAILED {message}")
                traceback.print_exc(file=sys.stderr)
                failures.append({"shape": list(shape), "dtype": dtype_name, "error": message})
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            rows.append(row)
            print(_line(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "torch": torch.__version__,
                                               "triton": triton.__version__, "rows": rows, "failures": failures},
                                              indent=2))
        print(f"wrote {args.json}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
