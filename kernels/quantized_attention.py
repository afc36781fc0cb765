"""Decode attention over a mixed-precision KV cache in Triton: packed low-bit segments dequantized in registers,
plus a full-precision window, in one online softmax. No dequantized copy of the cache is ever written.

Tiles are those of :mod:`mmaccel.kernels.attention`: one program owns one key/value head of one batch row and a
block of flattened query rows (``group * Lq``; at decode a tile holds a whole GQA group, so each packed byte is read
once per group). A program walks its share of each segment (high bits, then low bits) and of the window: it loads
the packed bytes of ``BLOCK_N`` tokens, shifts and masks out each channel's code (planar packing: channel ``c`` is
in byte ``c % (D * bits / 8)``), applies the block's key statistics or the token's value statistics and the block's
value normalizers, and feeds the result to the same online softmax as the dense kernel. When a launch would not
fill the GPU (decode with few heads), each program takes one of several equal shares of every part
(flash-decoding), and the dense kernel's merge kernel combines them by their log-sum-exp.

The PyTorch reference with the same signature, and the cache layout, are in
:mod:`mmaccel.kernels.quantized_attention_reference`; :func:`quantized_attention` dispatches between the two.
"""

from __future__ import annotations

import functools
import importlib
import math
from types import SimpleNamespace

import torch

from .quantized_attention_reference import QuantizedSegment, check_segment, quantized_attention_reference

dense = importlib.import_module(f"{__package__}.attention")

# Set on first use (see the dense kernel's module for why they are globals).
triton = None
tl = None
_dot = None
_attend_packed = None
_query_tile = None
_softmax_step = None


@functools.cache
def _kernels() -> SimpleNamespace:
    """Import triton (through the dense kernel's loader) and define the kernel."""
    global triton, tl, _dot, _attend_packed, _query_tile, _softmax_step
    dense._kernels()
    triton, tl, _dot, _query_tile, _softmax_step = (dense.triton, dense.tl, dense._dot, dense._query_tile,
                                                    dense._softmax_step)

    @triton.jit
    def _attend_packed(
        acc, l_i, m_i, q, KC, KLow, KStep, VC, VChan, VLow, VStep, Valid, bh, tokens, per_block, start, hi,
        dims, dim_valid, row_valid, qk_scale,
        BITS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, HAS_VALID: tl.constexpr,
        IEEE: tl.constexpr,
    ):
        """``BLOCK_N`` packed tokens of one segment through the online softmax; scores in log2 units."""
        t = start + tl.arange(0, BLOCK_N)
        t_valid = t < hi
        row = bh * tokens + t  # token index in the segment's (B * Hkv * N) rows
        stat = (bh * (tokens // per_block) + t // per_block) * HEAD_DIM  # row of its block's statistics
        byte = dims % (HEAD_DIM * BITS // 8)
        shift = (dims // (HEAD_DIM * BITS // 8)) * BITS
        code_mask = (1 << BITS) - 1

        kt_valid = dim_valid[:, None] & t_valid[None, :]  # keys are built transposed: (BLOCK_D, BLOCK_N)
        k_bytes = tl.load(KC + row[None, :] * (HEAD_DIM * BITS // 8) + byte[:, None], mask=kt_valid, other=0)
        k_codes = ((k_bytes.to(tl.int32) >> shift[:, None]) & code_mask).to(tl.float32)
        k_step = tl.load(KStep + stat[None, :] + dims[:, None], mask=kt_valid, other=0.0).to(tl.float32)
        k_low = tl.load(KLow + stat[None, :] + dims[:, None], mask=kt_valid, other=0.0).to(tl.float32)
        k = k_codes * k_step + k_low
        scores = _dot(q, k.to(q.dtype), IEEE) * qk_scale
        allowed = row_valid[:, None] & t_valid[None, :]
        if HAS_VALID:
            keep = tl.load(Valid + row, mask=t_valid, other=0)
            allowed = allowed & (keep != 0)[None, :]

        v_valid = t_valid[:, None] & dim_valid[None, :]
        v_bytes = tl.load(VC + row[:, None] * (HEAD_DIM * BITS // 8) + byte[None, :], mask=v_valid, other=0)
        v_codes = ((v_bytes.to(tl.int32) >> shift[None, :]) & code_mask).to(tl.float32)
        v_step = tl.load(VStep + row, mask=t_valid, other=0.0).to(tl.float32)
        v_low = tl.load(VLow + row, mask=t_valid, other=0.0).to(tl.float32)
        channel = tl.load(VChan + stat[:, None] + dims[None, :], mask=v_valid, other=0.0).to(tl.float32)
        v = (v_codes * v_step[:, None] + v_low[:, None]) * channel
        return _softmax_step(acc, l_i, m_i, tl.where(allowed, scores, float("-inf")), v.to(q.dtype), IEEE)

    @triton.jit
    def _quantized_kernel(
        Q, Out, Lse, WK, WV, WMask,
        HKC, HKLow, HKStep, HVC, HVChan, HVLow, HVStep, HValid,
        LKC, LKLow, LKStep, LVC, LVChan, LVLow, LVStep, LValid,
        stride_qb, stride_qh, stride_qm, stride_qd,
        stride_os, stride_ob, stride_om, stride_oh, stride_od,
        stride_ls, stride_lb, stride_lm, stride_lh,
        stride_kb, stride_kh, stride_kn, stride_kd,
        stride_vb, stride_vh, stride_vn, stride_vd,
        stride_mb, stride_mm, stride_mn,
        num_kv_heads, q_len, hi_tokens, hi_per_block, lo_tokens, lo_per_block, window,
        hi_share, lo_share, window_share, qk_scale,
        GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, HI_BITS: tl.constexpr, LO_BITS: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, HAS_VALID: tl.constexpr,
        HAS_WMASK: tl.constexpr, SPLIT: tl.constexpr, IEEE: tl.constexpr,
    ):
        pid_m = tl.program_id(0)
        pid_bh = tl.program_id(1)
        pid_split = tl.program_id(2)
        bh = pid_bh.to(tl.int64)
        batch = bh // num_kv_heads
        kv_head = bh % num_kv_heads

        q, row_valid, q_pos, head, dims, dim_valid = _query_tile(
            Q, batch, kv_head, pid_m, q_len, stride_qb, stride_qh, stride_qm, stride_qd,
            GROUP=GROUP, HEAD_DIM=HEAD_DIM, BLOCK_M=BLOCK_M, BLOCK_D=BLOCK_D)

        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

        lo = pid_split * hi_share
        hi = tl.minimum(lo + hi_share, hi_tokens)
        for start in range(lo, hi, BLOCK_N):
            acc, l_i, m_i = _attend_packed(
                acc, l_i, m_i, q, HKC, HKLow, HKStep, HVC, HVChan, HVLow, HVStep, HValid, bh, hi_tokens,
                hi_per_block, start, hi, dims, dim_valid, row_valid, qk_scale,
                BITS=HI_BITS, HEAD_DIM=HEAD_DIM, BLOCK_N=BLOCK_N, HAS_VALID=HAS_VALID, IEEE=IEEE)
        lo = pid_split * lo_share
        hi = tl.minimum(lo + lo_share, lo_tokens)
        for start in range(lo, hi, BLOCK_N):
            acc, l_i, m_i = _attend_packed(
                acc, l_i, m_i, q, LKC, LKLow, LKStep, LVC, LVChan, LVLow, LVStep, LValid, bh, lo_tokens,
                lo_per_block, start, hi, dims, dim_valid, row_valid, qk_scale,
                BITS=LO_BITS, HEAD_DIM=HEAD_DIM, BLOCK_N=BLOCK_N, HAS_VALID=HAS_VALID, IEEE=IEEE)

        # The full-precision window: causal (query i sees j <= i + window - q_len) or the given mask.
        k_base = WK + batch * stride_kb + kv_head * stride_kh
        v_base = WV + batch * stride_vb + kv_head * stride_vh
        lo = pid_split * window_share
        hi = tl.minimum(lo + window_share, window)
        for start in range(lo, hi, BLOCK_N):
            cols = start + tl.arange(0, BLOCK_N)
            col_valid = cols < hi
            k = tl.load(k_base + cols[None, :] * stride_kn + dims[:, None] * stride_kd,
                        mask=col_valid[None, :] & dim_valid[:, None], other=0.0)
            v = tl.load(v_base + cols[:, None] * stride_vn + dims[None, :] * stride_vd,
                        mask=col_valid[:, None] & dim_valid[None, :], other=0.0)
            scores = _dot(q, k, IEEE) * qk_scale
            allowed = row_valid[:, None] & col_valid[None, :]
            if HAS_WMASK:
                keep = tl.load(WMask + batch * stride_mb + q_pos[:, None] * stride_mm + cols[None, :] * stride_mn,
                               mask=allowed, other=0)
                allowed = allowed & (keep != 0)
            else:
                allowed = allowed & (cols[None, :] <= q_pos[:, None] + (window - q_len))
            acc, l_i, m_i = _softmax_step(acc, l_i, m_i, tl.where(allowed, scores, float("-inf")), v, IEEE)

        empty = l_i == 0.0
        out = acc / tl.where(empty, 1.0, l_i)[:, None]
        tl.store(Out + pid_split * stride_os + batch * stride_ob + q_pos[:, None] * stride_om
                 + head[:, None] * stride_oh + dims[None, :] * stride_od, out.to(Out.dtype.element_ty),
                 mask=row_valid[:, None] & dim_valid[None, :])
        if SPLIT:
            lse = tl.where(empty, float("-inf"), m_i + tl.log2(tl.where(empty, 1.0, l_i)))
            tl.store(Lse + pid_split * stride_ls + batch * stride_lb + q_pos * stride_lm + head * stride_lh, lse,
                     mask=row_valid)

    return SimpleNamespace(quantized=_quantized_kernel, merge=dense._kernels().merge)


def _segment_valid(segment: QuantizedSegment, packed_mask: torch.Tensor | None) -> torch.Tensor | None:
    """``(B, Hkv, N)`` uint8: which of a segment's tokens ``packed_mask`` lets the queries see."""
    if packed_mask is None:
        return None
    flat = segment.positions.long().flatten(1)
    return packed_mask.gather(1, flat).view(segment.positions.shape).to(torch.uint8).contiguous()


def quantized_attention_triton(
    q: torch.Tensor,
    segments: list[QuantizedSegment],
    window_k: torch.Tensor,
    window_v: torch.Tensor,
    *,
    packed_mask: torch.Tensor | None = None,
    window_mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """The Triton kernel; same signature and semantics as :func:`quantized_attention_reference`. At most two
    segments; q and the window of one dtype (float16, bfloat16 or float32) on CUDA, or CPU tensors under
    ``TRITON_INTERPRET=1``."""
    dense.check_triton_inputs("quantized attention", q, window_k, window_v)
    kernels = _kernels()
    batch, q_heads, q_len, head_dim = q.shape
    kv_heads, window = window_k.shape[1], window_k.shape[2]
    if len(segments) > 2:
        raise ValueError(f"the quantized attention kernel reads at most 2 segments (high and low bits); "
                         f"got {len(segments)}")
    for segment in segments:
        check_segment(segment, batch, kv_heads, head_dim)
        if not all(t.is_contiguous() for t in segment.tensors()):
            raise ValueError("the quantized attention kernel needs contiguous segment tensors")
    group = q_heads // kv_heads
    scale = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
    out = torch.empty(batch, q_len, q_heads, head_dim, device=q.device, dtype=q.dtype)
    if out.numel() == 0:
        return out

    parts = [s for s in segments if s.tokens > 0]
    parts += [None] * (2 - len(parts))
    placeholder = torch.zeros(1, dtype=torch.uint8, device=q.device)

    def pointers(segment: QuantizedSegment | None) -> list[torch.Tensor]:
        if segment is None:
            return [placeholder] * 8
        valid = _segment_valid(segment, packed_mask)
        return segment.tensors()[:7] + [valid if valid is not None else placeholder]

    tokens = [s.tokens if s is not None else 0 for s in parts]
    per_block = [s.per_block if s is not None else 1 for s in parts]
    bits = [s.bits if s is not None else 2 for s in parts]

    if window_mask is not None:
        window_mask = window_mask.to(device=q.device, dtype=torch.bool).expand(batch, q_len, window)
        window_mask = window_mask.view(torch.uint8)
        mask_strides = window_mask.stride()
    else:
        mask_strides = (0, 0, 0)

    rows = group * q_len
    block_m, block_n, num_warps, num_stages = dense._block_sizes(rows, head_dim, q.dtype)
    block_d = max(16, triton.next_power_of_2(head_dim))
    m_blocks = triton.cdiv(rows, block_m)
    splits = dense._num_splits(m_blocks * batch * kv_heads, sum(tokens) + window, block_n, q.device)

    def share(length: int) -> int:
        return triton.cdiv(triton.cdiv(length, splits), block_n) * block_n

    if splits > 1:
        target = torch.empty(splits, batch, q_len, q_heads, head_dim, device=q.device, dtype=torch.float32)
        lse = torch.empty(splits, batch, q_len, q_heads, device=q.device, dtype=torch.float32)
        lse_strides = lse.stride()
    else:
        target, lse, lse_strides = out.unsqueeze(0), out, (0, 0, 0, 0)

    kernels.quantized[(m_blocks, batch * kv_heads, splits)](
        q, target, lse, window_k, window_v, window_mask if window_mask is not None else placeholder,
        *pointers(parts[0]), *pointers(parts[1]),
        *q.stride(), *target.stride(), *lse_strides, *window_k.stride(), *window_v.stride(), *mask_strides,
        kv_heads, q_len, tokens[0], per_block[0], tokens[1], per_block[1], window,
        share(tokens[0]), share(tokens[1]), share(window), scale * 1.4426950408889634,  # log2(e)
        GROUP=group, HEAD_DIM=head_dim, HI_BITS=bits[0], LO_BITS=bits[1], BLOCK_M=block_m, BLOCK_N=block_n,
        BLOCK_D=block_d, HAS_VALID=packed_mask is not None, HAS_WMASK=window_mask is not None, SPLIT=splits > 1,
        IEEE=q.dtype == torch.float32, num_warps=num_warps, num_stages=num_stages,
    )
    if splits > 1:
        kernels.merge[(batch * q_len * q_heads,)](
            target, lse, out, splits, q_len, q_heads, *target.stride(), *lse.stride(), *out.stride(),
            HEAD_DIM=head_dim, BLOCK_D=block_d, BLOCK_S=max(2, triton.next_power_of_2(splits)),
            num_warps=4 if block_d >= 128 else 2,
        )
    return out


def quantized_attention(
    q: torch.Tensor,
    segments: list[QuantizedSegment],
    window_k: torch.Tensor,
    window_v: torch.Tensor,
    *,
    packed_mask: torch.Tensor | None = None,
    window_mask: torch.Tensor | None = None,
    scale: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Attention over a mixed-precision cache, ``(B, Lq, Hq, D)``; see :func:`quantized_attention_reference`.
    ``backend`` as in :func:`mmaccel.kernels.attention` (``auto``: the kernel on CUDA, the reference elsewhere)."""
    if backend not in dense.BACKENDS:
        raise ValueError(f"quantized attention backend {backend!r} is not supported; allowed: "
                         f"{', '.join(dense.BACKENDS)}")
    if backend == "triton" or (backend == "auto" and q.device.type == "cuda" and dense.triton_available()
                               and len(segments) <= 2):
        return quantized_attention_triton(q, segments, window_k, window_v, packed_mask=packed_mask,
                                          window_mask=window_mask, scale=scale)
    return quantized_attention_reference(q, segments, window_k, window_v, packed_mask=packed_mask,
                                         window_mask=window_mask, scale=scale)
