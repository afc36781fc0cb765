"""Time mmaccel's Triton attention against torch SDPA on a CUDA GPU: ``python -m mmaccel.kernels.benchmark``.

Prefill (causal, Lq = Lk) and decode (Lq = 1 against a cache) shapes of a 7-8B GQA model, fp16 and bf16. Each row
reports milliseconds (median of ``triton.testing.do_bench``), achieved TFLOP/s (prefill) or GB/s of K/V read
(decode), the ratio SDPA time ÷ ours (> 1: ours is faster) and the max abs difference from SDPA.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from .attention import attention_triton

PREFILL = [(1, 32, 8, 128, n) for n in (1024, 4096, 16384)] + [(1, 32, 32, 128, 4096)]
DECODE = [(b, 32, 8, 128, n) for b in (1, 8) for n in (1024, 8192, 65536)] + [(1, 32, 32, 128, 8192)]


def _sdpa(q, k, v, causal):
    group = q.shape[1] // k.shape[1]
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=group > 1)
    return out.transpose(1, 2)


def _row(kind, batch, q_heads, kv_heads, head_dim, kv_len, dtype):
    import triton.testing

    q_len = kv_len if kind == "prefill" else 1
    q = torch.randn(batch, q_heads, q_len, head_dim, device="cuda", dtype=dtype)
    k = torch.randn(batch, kv_heads, kv_len, head_dim, device="cuda", dtype=dtype)
    v = torch.randn_like(k)
    causal = kind == "prefill"
    ours = attention_triton(q, k, v, causal=causal)
    ref = _sdpa(q, k, v, causal)
    err = (ours.float() - ref.float()).abs().max().item()
    t_ours = triton.testing.do_bench(lambda: attention_triton(q, k, v, causal=causal), return_mode="median")
    t_sdpa = triton.testing.do_bench(lambda: _sdpa(q, k, v, causal), return_mode="median")
    if kind == "prefill":
        flops = 4 * batch * q_heads * q_len * kv_len * head_dim / 2  # causal: half the matrix
        rate, unit = flops / t_ours / 1e9, "TFLOP/s"
    else:
        bytes_read = 2 * k.numel() * k.element_size()
        rate, unit = bytes_read / t_ours / 1e6, "GB/s"
    return {"kind": kind, "dtype": str(dtype).removeprefix("torch."), "batch": batch, "q_heads": q_heads,
            "kv_heads": kv_heads, "head_dim": head_dim, "kv_len": kv_len, "ours_ms": t_ours, "sdpa_ms": t_sdpa,
            "sdpa_over_ours": t_sdpa / t_ours, "rate": rate, "unit": unit, "max_abs_err_vs_sdpa": err}


def main(argv: list[str] | None = None) -> int:
    """Run every row, print a table, write ``--json`` if given."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", help="write the rows to this path")
    parser.add_argument("--dtypes", default="float16,bfloat16")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("the kernel benchmark needs a CUDA GPU")
        return 1
    rows = []
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}")
    print(f"{'kind':<8}{'dtype':<9}{'B':>3}{'Hq':>4}{'Hkv':>4}{'D':>5}{'Lk':>7}{'ours ms':>10}{'sdpa ms':>10}"
          f"{'sdpa/ours':>10}{'rate':>14}{'max err':>10}")
    for dtype_name in args.dtypes.split(","):
        dtype = getattr(torch, dtype_name)
        for kind, shapes in (("prefill", PREFILL), ("decode", DECODE)):
            for batch, q_heads, kv_heads, head_dim, kv_len in shapes:
                try:
                    row = _row(kind, batch, q_heads, kv_heads, head_dim, kv_len, dtype)
                except Exception as err:  # keep going: one bad shape must not hide the others
                    print(f"{kind:<8}{dtype_name:<9} B={batch} Lk={kv_len}: {type(err).__name__}: {err}")
                    continue
                rows.append(row)
                print(f"{kind:<8}{row['dtype']:<9}{batch:>3}{q_heads:>4}{kv_heads:>4}{head_dim:>5}{kv_len:>7}"
                      f"{row['ours_ms']:>10.3f}{row['sdpa_ms']:>10.3f}{row['sdpa_over_ours']:>10.2f}"
                      f"{row['rate']:>8.1f} {row['unit']:<6}{row['max_abs_err_vs_sdpa']:>9.1e}")
    if args.json:
        Path(args.json).write_text(json.dumps({"gpu": torch.cuda.get_device_name(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
