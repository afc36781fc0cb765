"""Flash attention in Triton: causal or masked, grouped-query, prefill and decode, written in transformers' layout.

One program owns one key/value head of one batch row and a block of *flattened query rows*: row ``r`` of the
``group * Lq`` rows is query position ``r % Lq`` of query head ``kv_head * group + r // Lq``. At decode (``Lq == 1``)
a tile thus holds all the query heads that share the key/value head, so K/V are read once per group, never once per
query head, and repeated K/V are never materialized. Strides are passed through, so transposed views of q/k/v (what
transformers hands an attention function) are read in place, and the output is written directly as
``(B, Lq, Hq, D)``.

Per program the key loop runs in two stages: key blocks every row of the tile may fully see (no masking work at
all), then the blocks on the causal diagonal / under an explicit mask / at the ragged end (masked). Blocks above the
causal diagonal are never visited. When a launch would not fill the GPU (decode, short chunks), the keys are split
over several programs (flash-decoding); a second small kernel merges the partial results by their log-sum-exp.

Triton is imported lazily, on first use: ``import mmaccel.kernels`` works without it, and ``TRITON_INTERPRET=1``
(Triton's CPU interpreter) only has to be set before the first Triton call, not before this module is imported.

The PyTorch reference with the same signature is :func:`mmaccel.kernels.attention_reference.attention_reference`;
:func:`attention` dispatches between the two.
"""

from __future__ import annotations

import functools
import math
import os
from types import SimpleNamespace

import torch

from .attention_reference import attention_reference, check_shapes, normalize_mask

#: Values accepted by ``attention(..., backend=...)``.
BACKENDS = ("auto", "torch", "triton")

# Set by _kernels() on first use. They are module globals because @triton.jit functions resolve the names they use
# (``tl``, and the helper ``_attend_block``) in their module's globals, not in an enclosing function's scope.
triton = None
tl = None
_dot = None
_attend_block = None
_query_tile = None
_softmax_step = None


@functools.cache
def _triton_import_error() -> str | None:
    """``None`` when triton imports, else why not (cached: import once per process)."""
    try:
        import triton as _triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception as err:  # ImportError, or a broken install raising something else
        return f"{type(err).__name__}: {err}"
    return None


def triton_available() -> bool:
    """Whether the triton package imports here (the kernel then runs on CUDA tensors, or on CPU tensors when
    ``TRITON_INTERPRET=1`` was set before the first Triton call)."""
    return _triton_import_error() is None


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _interpreter_mode() -> bool:
    """Whether Triton kernels run in the interpreter: fixed when they are defined (at the first Triton call), read
    from the environment until then."""
    return _kernels().interpreted if _kernels.cache_info().currsize else _interpreting()


def triton_unusable_reason(device: torch.device | str) -> str | None:
    """Why the Triton kernel cannot run on tensors on ``device`` here, or ``None`` when it can: the one test that
    :func:`attention_triton` and ``mmaccel.accelerate(kernels="triton")`` both apply."""
    error = _triton_import_error()
    if error is not None:
        return f"the triton package does not import here ({error})"
    if torch.device(device).type != "cuda" and not _interpreter_mode():
        return (f"it needs CUDA tensors (got {device}), or TRITON_INTERPRET=1 set before the first Triton call "
                "to run in the interpreter")
    return None


@functools.cache
def _kernels() -> SimpleNamespace:
    """Import triton and define the kernels (once). Raises ``RuntimeError`` naming what is missing."""
    global triton, tl, _dot, _attend_block, _query_tile, _softmax_step
    error = _triton_import_error()
    if error is not None:
        raise RuntimeError(f"attention backend 'triton' needs the triton package, which does not import here "
                           f"({error}); install triton or use backend='torch'")
    import triton as _triton
    import triton.language as _tl

    triton, tl = _triton, _tl

    @triton.jit
    def _dot(a, b, IEEE: tl.constexpr):
        """``a @ b`` accumulated in float32: full-precision for float32 inputs, the platform default (tensor cores)
        otherwise."""
        if IEEE:
            out = tl.dot(a, b, input_precision="ieee")
        else:
            out = tl.dot(a, b)
        return out

    @triton.jit
    def _query_tile(
        Q, batch, kv_head, pid_m, q_len, stride_qb, stride_qh, stride_qm, stride_qd,
        GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
    ):
        """A tile's flattened query rows (row ``r``: position ``r % Lq`` of query head ``kv_head * GROUP + r //
        Lq``) and their queries: ``(q, row_valid, q_pos, head, dims, dim_valid)``."""
        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        row_valid = rows < GROUP * q_len
        q_pos = rows % q_len
        head = kv_head * GROUP + rows // q_len
        dims = tl.arange(0, BLOCK_D)
        dim_valid = dims < HEAD_DIM
        q = tl.load(Q + batch * stride_qb + head[:, None] * stride_qh + q_pos[:, None] * stride_qm
                    + dims[None, :] * stride_qd, mask=row_valid[:, None] & dim_valid[None, :], other=0.0)
        return q, row_valid, q_pos, head, dims, dim_valid

    @triton.jit
    def _softmax_step(acc, l_i, m_i, scores, v, IEEE: tl.constexpr):
        """One key block of the online softmax: ``scores`` in log2 units, ``-inf`` where not allowed (a row that has
        seen no key yet stays empty)."""
        m_new = tl.maximum(m_i, tl.max(scores, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(scores - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, IEEE)
        return acc, l_i, m_new

    @triton.jit
    def _attend_block(
        acc, l_i, m_i, q, k_base, v_base, mask_rows, start, hi, dims, dim_valid, q_pos, row_valid,
        stride_kn, stride_kd, stride_vn, stride_vd, stride_mn, causal_offset, qk_scale,
        BLOCK_N: tl.constexpr, EVEN_D: tl.constexpr, MASKED: tl.constexpr, IS_CAUSAL: tl.constexpr,
        HAS_MASK: tl.constexpr, IEEE: tl.constexpr,
    ):
        """One key block of the online softmax: update (acc, l_i, m_i); scores are in log2 units."""
        cols = start + tl.arange(0, BLOCK_N)
        k_ptrs = k_base + cols[None, :] * stride_kn + dims[:, None] * stride_kd  # (BLOCK_D, BLOCK_N): K^T
        v_ptrs = v_base + cols[:, None] * stride_vn + dims[None, :] * stride_vd  # (BLOCK_N, BLOCK_D)
        if MASKED:
            col_valid = cols < hi
            k = tl.load(k_ptrs, mask=col_valid[None, :] & dim_valid[:, None], other=0.0)
            v = tl.load(v_ptrs, mask=col_valid[:, None] & dim_valid[None, :], other=0.0)
        elif EVEN_D:
            k = tl.load(k_ptrs)
            v = tl.load(v_ptrs)
        else:
            k = tl.load(k_ptrs, mask=dim_valid[:, None], other=0.0)
            v = tl.load(v_ptrs, mask=dim_valid[None, :], other=0.0)
        scores = _dot(q, k, IEEE) * qk_scale
        if MASKED:
            allowed = row_valid[:, None] & col_valid[None, :]
            if IS_CAUSAL:
                allowed = allowed & (cols[None, :] <= q_pos[:, None] + causal_offset)
            if HAS_MASK:
                keep = tl.load(mask_rows[:, None] + cols[None, :] * stride_mn, mask=allowed, other=0)
                allowed = allowed & (keep != 0)
            scores = tl.where(allowed, scores, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(scores, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows that have seen no key yet
        else:
            m_new = tl.maximum(m_i, tl.max(scores, 1))
            m_safe = m_new
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(scores - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, IEEE)
        return acc, l_i, m_new

    @triton.jit
    def _attention_kernel(
        Q, K, V, Out, Mask, Lse,
        stride_qb, stride_qh, stride_qm, stride_qd,
        stride_kb, stride_kh, stride_kn, stride_kd,
        stride_vb, stride_vh, stride_vn, stride_vd,
        stride_os, stride_ob, stride_om, stride_oh, stride_od,
        stride_mb, stride_mh, stride_mm, stride_mn,
        stride_ls, stride_lb, stride_lm, stride_lh,
        num_kv_heads, q_len, kv_len, causal_offset, keys_per_split, qk_scale,
        GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        BLOCK_D: tl.constexpr, HAS_MASK: tl.constexpr, IS_CAUSAL: tl.constexpr, SPLIT: tl.constexpr,
        REVERSE: tl.constexpr, IEEE: tl.constexpr,
    ):
        pid_m = tl.program_id(0)
        if REVERSE:  # causal: the tiles with the most keys start first, which shortens the tail of the launch
            pid_m = tl.num_programs(0) - 1 - pid_m
        pid_bh = tl.program_id(1)
        pid_split = tl.program_id(2)
        batch = (pid_bh // num_kv_heads).to(tl.int64)  # 64-bit offsets: long caches overflow int32
        kv_head = (pid_bh % num_kv_heads).to(tl.int64)

        n_rows = GROUP * q_len
        q, row_valid, q_pos, head, dims, dim_valid = _query_tile(
            Q, batch, kv_head, pid_m, q_len, stride_qb, stride_qh, stride_qm, stride_qd,
            GROUP=GROUP, HEAD_DIM=HEAD_DIM, BLOCK_M=BLOCK_M, BLOCK_D=BLOCK_D)

        lo = pid_split * keys_per_split
        hi = tl.minimum(lo + keys_per_split, kv_len)
        full_hi = hi  # keys below full_hi are visible to every row of the tile
        if IS_CAUSAL:
            first_row = pid_m * BLOCK_M
            last_row = tl.minimum(first_row + BLOCK_M, n_rows) - 1
            one_head = first_row // q_len == last_row // q_len
            first_pos = tl.where(one_head, first_row % q_len, 0)
            last_pos = tl.where(one_head, last_row % q_len, q_len - 1)
            hi = tl.minimum(hi, last_pos + causal_offset + 1)
            full_hi = tl.minimum(hi, first_pos + causal_offset + 1)
        if HAS_MASK:
            full_hi = lo
        full_hi = tl.maximum(full_hi, lo)
        full_hi = lo + ((full_hi - lo) // BLOCK_N) * BLOCK_N  # whole blocks only

        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
        k_base = K + batch * stride_kb + kv_head * stride_kh
        v_base = V + batch * stride_vb + kv_head * stride_vh
        mask_rows = Mask + batch * stride_mb + head * stride_mh + q_pos * stride_mm
        for start in range(lo, full_hi, BLOCK_N):
            acc, l_i, m_i = _attend_block(
                acc, l_i, m_i, q, k_base, v_base, mask_rows, start, hi, dims, dim_valid, q_pos, row_valid,
                stride_kn, stride_kd, stride_vn, stride_vd, stride_mn, causal_offset, qk_scale,
                BLOCK_N=BLOCK_N, EVEN_D=BLOCK_D == HEAD_DIM, MASKED=False, IS_CAUSAL=IS_CAUSAL, HAS_MASK=HAS_MASK,
                IEEE=IEEE)
        for start in range(full_hi, hi, BLOCK_N):
            acc, l_i, m_i = _attend_block(
                acc, l_i, m_i, q, k_base, v_base, mask_rows, start, hi, dims, dim_valid, q_pos, row_valid,
                stride_kn, stride_kd, stride_vn, stride_vd, stride_mn, causal_offset, qk_scale,
                BLOCK_N=BLOCK_N, EVEN_D=BLOCK_D == HEAD_DIM, MASKED=True, IS_CAUSAL=IS_CAUSAL, HAS_MASK=HAS_MASK,
                IEEE=IEEE)

        empty = l_i == 0.0  # rows that may attend to nothing (in this key range) output exact zeros
        out = acc / tl.where(empty, 1.0, l_i)[:, None]
        out_ptrs = (Out + pid_split * stride_os + batch * stride_ob + q_pos[:, None] * stride_om
                    + head[:, None] * stride_oh + dims[None, :] * stride_od)
        tl.store(out_ptrs, out.to(Out.dtype.element_ty), mask=row_valid[:, None] & dim_valid[None, :])
        if SPLIT:
            # log2-sum-exp of this key range's scores, with which the merge kernel weighs the normalized partials.
            lse = tl.where(empty, float("-inf"), m_i + tl.log2(tl.where(empty, 1.0, l_i)))
            tl.store(Lse + pid_split * stride_ls + batch * stride_lb + q_pos * stride_lm + head * stride_lh, lse,
                     mask=row_valid)

    @triton.jit
    def _merge_kernel(
        Partial, Lse, Out, n_splits, q_len, q_heads,
        stride_ps, stride_pb, stride_pm, stride_ph, stride_pd,
        stride_ls, stride_lb, stride_lm, stride_lh,
        stride_ob, stride_om, stride_oh, stride_od,
        HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr,
    ):
        """One program per (batch, query position, head): merge the split partials by their log2-sum-exp."""
        pid = tl.program_id(0)
        head = pid % q_heads
        q_pos = (pid // q_heads) % q_len
        batch = (pid // (q_heads * q_len)).to(tl.int64)
        splits = tl.arange(0, BLOCK_S)
        split_valid = splits < n_splits
        dims = tl.arange(0, BLOCK_D)
        dim_valid = dims < HEAD_DIM
        lse = tl.load(Lse + splits * stride_ls + batch * stride_lb + q_pos * stride_lm + head * stride_lh,
                      mask=split_valid, other=float("-inf"))
        top = tl.max(lse, 0)
        weights = tl.exp2(lse - tl.where(top == float("-inf"), 0.0, top))
        total = tl.sum(weights, 0)
        part = tl.load(Partial + splits[:, None] * stride_ps + batch * stride_pb + q_pos * stride_pm
                       + head * stride_ph + dims[None, :] * stride_pd,
                       mask=split_valid[:, None] & dim_valid[None, :], other=0.0)
        out = tl.sum(part * weights[:, None], 0) / tl.where(total == 0.0, 1.0, total)
        tl.store(Out + batch * stride_ob + q_pos * stride_om + head * stride_oh + dims * stride_od,
                 out.to(Out.dtype.element_ty), mask=dim_valid)

    return SimpleNamespace(attention=_attention_kernel, merge=_merge_kernel, interpreted=_interpreting())


def _block_sizes(rows: int, head_dim: int, dtype: torch.dtype) -> tuple[int, int, int, int]:
    """``(BLOCK_M, BLOCK_N, num_warps, num_stages)`` for a launch: a fixed choice per shape class (no autotune, which
    breaks the interpreter). Shared memory stays under ~130 KB (fits A100 and H100)."""
    if dtype == torch.float32:  # twice the bytes per element, and full-precision dots
        if head_dim > 128:
            return (16 if rows <= 16 else 32), 16, 4, 2
        return (16 if rows <= 16 else 64), 32, 4, 2
    if rows <= 16:  # decode: one tile holds the query heads of a group
        return 16, 64, 4, 3
    if rows <= 64 or head_dim > 128:
        return 64, (32 if head_dim > 128 else 64), 4, 2 if head_dim > 128 else 3
    return 128, 64, 8, 3


@functools.cache
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _num_splits(programs: int, kv_len: int, block_n: int, device: torch.device) -> int:
    """How many key ranges to split a launch into, so that a short-query launch still fills the GPU."""
    if device.type != "cuda":
        return 1
    sms = _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    if programs >= sms:
        return 1
    splits = min(-(-2 * sms // programs), -(-kv_len // (4 * block_n)), 64)
    return max(1, splits)


def check_triton_inputs(op: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """Raise ``RuntimeError`` when ``op``'s Triton kernel cannot run on these tensors' device, and ``ValueError``
    unless q, k, v share one dtype among float16, bfloat16 and float32."""
    reason = triton_unusable_reason(q.device)
    if reason is not None:
        raise RuntimeError(f"{op} backend 'triton' cannot run: {reason}; use backend='torch' or 'auto'")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"{op} backend 'triton' needs q, k, v of one dtype among float16, bfloat16, float32; "
                         f"got {q.dtype}, {k.dtype}, {v.dtype}")


def attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    causal: bool = True,
    scale: float | None = None,
) -> torch.Tensor:
    """The Triton kernel; same signature and semantics as :func:`attention_reference`.

    Needs q, k, v of one dtype (float16, bfloat16 or float32) on a CUDA device, or CPU tensors under
    ``TRITON_INTERPRET=1``. Raises ``RuntimeError`` naming what is missing when it cannot run here.
    """
    check_triton_inputs("attention", q, k, v)
    kernels = _kernels()
    check_shapes(q, k, v, mask)
    batch, q_heads, q_len, head_dim = q.shape
    kv_heads, kv_len = k.shape[1], k.shape[2]
    group = q_heads // kv_heads
    scale = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
    out = torch.empty(batch, q_len, q_heads, head_dim, device=q.device, dtype=q.dtype)
    if out.numel() == 0:
        return out
    if kv_len == 0:
        return out.zero_()

    allowed = normalize_mask(mask, kv_len)
    if allowed is not None:
        # expand() gives broadcast dims stride 0 (no copy); a bool tensor reads as uint8 in the kernel.
        allowed = allowed.to(q.device).expand(batch, q_heads, q_len, kv_len).view(torch.uint8)
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
        lse = torch.empty(splits, batch, q_len, q_heads, device=q.device, dtype=torch.float32)
        lse_strides = lse.stride()
    else:
        target = out.unsqueeze(0)
        lse = out  # never read nor written: SPLIT is off
        lse_strides = (0, 0, 0, 0)
    is_causal = allowed is None and causal

    kernels.attention[(m_blocks, batch * kv_heads, splits)](
        q, k, v, target, allowed if allowed is not None else q, lse,
        *q.stride(), *k.stride(), *v.stride(), *target.stride(), *mask_strides, *lse_strides,
        kv_heads, q_len, kv_len, kv_len - q_len, keys_per_split, scale * 1.4426950408889634,  # log2(e)
        GROUP=group, HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
        HAS_MASK=allowed is not None, IS_CAUSAL=is_causal, SPLIT=splits > 1, REVERSE=is_causal and m_blocks > 1,
        IEEE=q.dtype == torch.float32,
        num_warps=num_warps, num_stages=num_stages,
    )
    if splits > 1:
        kernels.merge[(batch * q_len * q_heads,)](
            target, lse, out, splits, q_len, q_heads,
            *target.stride(), *lse.stride(), *out.stride(),
            HEAD_DIM=head_dim, BLOCK_D=block_d, BLOCK_S=max(2, triton.next_power_of_2(splits)),
            num_warps=4 if block_d >= 128 else 2,
        )
    return out


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

    ``backend``: ``"triton"`` (the kernel), ``"torch"`` (the reference), or ``"auto"`` (the kernel for CUDA tensors
    when triton imports, the reference otherwise). Raises ``ValueError`` for any other backend.
    """
    if backend not in BACKENDS:
        raise ValueError(f"attention backend {backend!r} is not supported; allowed: {', '.join(BACKENDS)}")
    if backend == "triton" or (backend == "auto" and q.device.type == "cuda" and triton_available()):
        return attention_triton(q, k, v, mask, causal=causal, scale=scale)
    return attention_reference(q, k, v, mask, causal=causal, scale=scale)
