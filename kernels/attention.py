"""Flash attention in Triton: causal or masked, grouped-query, prefill and decode, written in transformers' layout.

One program owns one key/value head of one batch row and a block of *flattened query rows*: row ``r`` of the
``group * Lq`` rows is query position ``r % Lq`` of query head ``r // Lq`` in the group. At decode (``Lq == 1``) a
tile thus holds all query heads that share the key/value head, so K/V are read once per group, not once per query
head. Long decodes split the keys over several programs (flash-decoding); the partial results are merged after.

The PyTorch reference with the same signature is :func:`mmaccel.kernels.attention_reference.attention_reference`;
:func:`attention` dispatches between the two.
"""

from __future__ import annotations

import math
import os

import torch

from .attention_reference import attention_reference, check_shapes, normalize_mask

try:  # Triton is optional: CPU-only installs run the reference.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None

BACKENDS = ("auto", "torch", "triton")


def triton_available() -> bool:
    """Whether the Triton kernel can run here (Triton installed, and a GPU or ``TRITON_INTERPRET=1``)."""
    return triton is not None


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


if triton is not None:

    @triton.jit
    def _attention_kernel(
        Q, K, V, Out, Mask, Lse,
        stride_qb, stride_qh, stride_qm, stride_qd,
        stride_kb, stride_kh, stride_kn, stride_kd,
        stride_vb, stride_vh, stride_vn, stride_vd,
        stride_os, stride_ob, stride_om, stride_oh, stride_od,
        stride_mb, stride_mh, stride_mm, stride_mn,
        stride_ls, stride_lb, stride_lh, stride_lm,
        num_kv_heads, q_len, kv_len, causal_offset, keys_per_split, qk_scale,
        GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        BLOCK_D: tl.constexpr, HAS_MASK: tl.constexpr, IS_CAUSAL: tl.constexpr, SPLIT: tl.constexpr,
        PRECISION: tl.constexpr,
    ):
        pid_m = tl.program_id(0)
        pid_bh = tl.program_id(1)
        pid_split = tl.program_id(2)
        batch = pid_bh // num_kv_heads
        kv_head = pid_bh % num_kv_heads

        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        row_valid = rows < GROUP * q_len
        q_pos = rows % q_len
        head = kv_head * GROUP + rows // q_len
        dims = tl.arange(0, BLOCK_D)
        dim_valid = dims < HEAD_DIM

        q = tl.load(Q + batch * stride_qb + head[:, None] * stride_qh + q_pos[:, None] * stride_qm
                    + dims[None, :] * stride_qd, mask=row_valid[:, None] & dim_valid[None, :], other=0.0)

        lo = pid_split * keys_per_split
        hi = tl.minimum(lo + keys_per_split, kv_len)
        if IS_CAUSAL:
            # The last query position this block holds bounds the keys any of its rows can see.
            first_row = pid_m * BLOCK_M
            last_row = tl.minimum(first_row + BLOCK_M, GROUP * q_len) - 1
            last_pos = tl.where(first_row // q_len == last_row // q_len, last_row % q_len, q_len - 1)
            hi = tl.minimum(hi, last_pos + causal_offset + 1)

        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
        k_base = K + batch * stride_kb + kv_head * stride_kh
        v_base = V + batch * stride_vb + kv_head * stride_vh
        for start in range(lo, hi, BLOCK_N):
            cols = start + tl.arange(0, BLOCK_N)
            col_valid = cols < hi
            k = tl.load(k_base + cols[None, :] * stride_kn + dims[:, None] * stride_kd,
                        mask=col_valid[None, :] & dim_valid[:, None], other=0.0)
            scores = tl.dot(q, k, input_precision=PRECISION) * qk_scale
            allowed = row_valid[:, None] & col_valid[None, :]
            if IS_CAUSAL:
                allowed = allowed & (cols[None, :] <= q_pos[:, None] + causal_offset)
            if HAS_MASK:
                keep = tl.load(Mask + batch * stride_mb + head[:, None] * stride_mh + q_pos[:, None] * stride_mm
                               + cols[None, :] * stride_mn, mask=allowed, other=0)
                allowed = allowed & (keep != 0)
            scores = tl.where(allowed, scores, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(scores, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows that saw no key yet
            alpha = tl.exp2(m_i - m_safe)
            p = tl.exp2(scores - m_safe[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(v_base + cols[:, None] * stride_vn + dims[None, :] * stride_vd,
                        mask=col_valid[:, None] & dim_valid[None, :], other=0.0)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
            m_i = m_new

        out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]  # rows with no allowed key stay 0
        out_ptrs = (Out + pid_split * stride_os + batch * stride_ob + q_pos[:, None] * stride_om
                    + head[:, None] * stride_oh + dims[None, :] * stride_od)
        if SPLIT:
            # Partial results of this key range: normalized output and log2-sum-exp, merged by the caller.
            lse = tl.where(l_i == 0.0, float("-inf"), m_i + tl.log2(tl.where(l_i == 0.0, 1.0, l_i)))
            tl.store(Lse + pid_split * stride_ls + batch * stride_lb + head * stride_lh + q_pos * stride_lm, lse,
                     mask=row_valid)
        tl.store(out_ptrs, out.to(Out.dtype.element_ty), mask=row_valid[:, None] & dim_valid[None, :])


def _block_sizes(rows: int, head_dim: int, dtype: torch.dtype) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages); one fixed choice per shape class (no autotune, which breaks the
    interpreter)."""
    block_m = 16 if rows <= 16 else (64 if rows <= 64 or head_dim > 128 or dtype == torch.float32 else 128)
    block_n = 32 if head_dim > 128 or dtype == torch.float32 else 64
    num_warps = 4 if block_m <= 64 else 8
    return block_m, block_n, num_warps, 2 if head_dim > 128 else 3


def _num_splits(programs: int, kv_len: int, block_n: int, device: torch.device) -> int:
    """How many key ranges to split a launch into so that a short-query launch still fills the GPU."""
    if device.type != "cuda" or _interpreting():
        return 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    if programs >= sms:
        return 1
    splits = min(triton.cdiv(2 * sms, programs), triton.cdiv(kv_len, 4 * block_n), 64)
    return max(1, splits)


def attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    causal: bool = True,
    scale: float | None = None,
) -> torch.Tensor:
    """The Triton kernel; same signature and semantics as :func:`attention_reference`."""
    if triton is None:
        raise RuntimeError("backend 'triton' needs the triton package, which is not installed; use backend='torch'")
    if q.device.type != "cuda" and not _interpreting():
        raise RuntimeError(f"backend 'triton' needs CUDA tensors (got {q.device}) or TRITON_INTERPRET=1 set before "
                           "triton is imported; use backend='torch' on CPU")
    check_shapes(q, k, v, mask)
    batch, q_heads, q_len, head_dim = q.shape
    kv_heads, kv_len = k.shape[1], k.shape[2]
    group = q_heads // kv_heads
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    out = torch.empty(batch, q_len, q_heads, head_dim, device=q.device, dtype=q.dtype)
    if q_len == 0 or kv_len == 0:
        return out.zero_()

    allowed = normalize_mask(mask)
    if allowed is not None:
        allowed = allowed.expand(batch, q_heads, q_len, kv_len).view(torch.uint8)
        mask_strides = allowed.stride()
    else:
        mask_strides = (0, 0, 0, 0)

    rows = group * q_len
    block_m, block_n, num_warps, num_stages = _block_sizes(rows, head_dim, q.dtype)
    block_d = max(16, triton.next_power_of_2(head_dim))
    m_blocks = triton.cdiv(rows, block_m)
    splits = _num_splits(m_blocks * batch * kv_heads, kv_len, block_n, q.device)
    keys_per_split = triton.cdiv(triton.cdiv(kv_len, splits), block_n) * block_n
    splits = triton.cdiv(kv_len, keys_per_split)
    if splits > 1:
        target = torch.empty(splits, batch, q_len, q_heads, head_dim, device=q.device, dtype=torch.float32)
        lse = torch.empty(splits, batch, q_heads, q_len, device=q.device, dtype=torch.float32)
    else:
        target = out.unsqueeze(0)
        lse = out  # not read: SPLIT is off
    lse_strides = lse.stride() if splits > 1 else (0, 0, 0, 0)

    grid = (m_blocks, batch * kv_heads, splits)
    _attention_kernel[grid](
        q, k, v, target, allowed if allowed is not None else q, lse,
        *q.stride(), *k.stride(), *v.stride(), *target.stride(), *mask_strides,
        *lse_strides,
        kv_heads, q_len, kv_len, kv_len - q_len, keys_per_split, scale * 1.4426950408889634,
        GROUP=group, HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
        HAS_MASK=allowed is not None, IS_CAUSAL=allowed is None and causal, SPLIT=splits > 1,
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=num_warps, num_stages=num_stages,
    )
    if splits > 1:
        _merge_splits(target, lse, out)
    return out


def _merge_splits(partial: torch.Tensor, lse: torch.Tensor, out: torch.Tensor) -> None:
    """Combine per-split normalized outputs ``(S, B, Lq, H, D)`` with their log2-sum-exp ``(S, B, H, Lq)``."""
    lse = lse.permute(0, 1, 3, 2)  # (S, B, Lq, H)
    top = lse.amax(dim=0, keepdim=True)
    weights = torch.exp2(lse - torch.where(torch.isinf(top), torch.zeros_like(top), top))
    total = weights.sum(dim=0)
    merged = (partial * weights[..., None]).sum(dim=0) / torch.where(total == 0, 1.0, total)[..., None]
    out.copy_(merged.to(out.dtype))


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    causal: bool = True,
    scale: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Grouped-query softmax attention returning ``(B, Lq, Hq, D)``; see :func:`attention_reference` for semantics.

    ``backend``: ``"triton"`` (the kernel), ``"torch"`` (the reference), or ``"auto"`` (Triton for CUDA tensors when
    Triton is installed, the reference otherwise).
    """
    if backend not in BACKENDS:
        raise ValueError(f"attention backend {backend!r} is not supported; allowed: {', '.join(BACKENDS)}")
    if backend == "triton" or (backend == "auto" and q.device.type == "cuda" and triton_available()):
        return attention_triton(q, k, v, mask, causal=causal, scale=scale)
    return attention_reference(q, k, v, mask, causal=causal, scale=scale)
