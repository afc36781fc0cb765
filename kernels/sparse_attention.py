"""Sparse-prefill attention in Triton: causal flash attention over a gathered set of key positions per (batch,
key/value head), grouped-query aware. The op behind ZipVL-style dynamic sparse attention: every query keeps its
position, and attends only to the keys its layer judged important.

Tiles are those of :mod:`mmaccel.kernels.attention`: one program owns one key/value head of one batch row and a
block of flattened query rows (``group * Lq``), so the selected keys are gathered once per group. The key loop runs
over blocks of the index list, loading each block's positions and then the key/value rows they point to; since the
list is ascending, a tile stops at the first selected key past its last query's position (computed on the host
with ``searchsorted``), so causal work is skipped as in the dense kernel.

The PyTorch reference with the same signature is
:func:`mmaccel.kernels.sparse_attention_reference.sparse_attention_reference`; :func:`sparse_attention`
dispatches between the two.
"""

from __future__ import annotations

import functools
import importlib
import math
from types import SimpleNamespace

import torch

from .attention_reference import check_shapes
from .sparse_attention_reference import check_index, sparse_attention_reference

# The dense kernel's module (``from . import attention`` would give the package's ``attention`` function).
dense = importlib.import_module(f"{__package__}.attention")

# Set on first use, like the dense kernel's (@triton.jit resolves names in its module's globals).
triton = None
tl = None
_dot = None
_query_tile = None
_softmax_step = None


@functools.cache
def _kernels() -> SimpleNamespace:
    """Import triton (through the dense kernel's loader, which names what is missing) and define the kernel."""
    global triton, tl, _dot, _query_tile, _softmax_step
    dense._kernels()
    triton, tl, _dot, _query_tile, _softmax_step = (dense.triton, dense.tl, dense._dot, dense._query_tile,
                                                    dense._softmax_step)

    @triton.jit
    def _sparse_kernel(
        Q, K, V, Out, Index, Limit,
        stride_qb, stride_qh, stride_qm, stride_qd,
        stride_kb, stride_kh, stride_kn, stride_kd,
        stride_vb, stride_vh, stride_vn, stride_vd,
        stride_ob, stride_om, stride_oh, stride_od,
        stride_ib, stride_ih, stride_ip,
        stride_lb, stride_lh, stride_lm,
        num_kv_heads, q_len, causal_offset, qk_scale,
        GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        BLOCK_D: tl.constexpr, IS_CAUSAL: tl.constexpr, IEEE: tl.constexpr,
    ):
        pid_m = tl.program_id(0)
        pid_bh = tl.program_id(1)
        batch = (pid_bh // num_kv_heads).to(tl.int64)
        kv_head = (pid_bh % num_kv_heads).to(tl.int64)

        q, row_valid, q_pos, head, dims, dim_valid = _query_tile(
            Q, batch, kv_head, pid_m, q_len, stride_qb, stride_qh, stride_qm, stride_qd,
            GROUP=GROUP, HEAD_DIM=HEAD_DIM, BLOCK_M=BLOCK_M, BLOCK_D=BLOCK_D)

        # How many selected keys this tile may need: all kept ones, or (causal) those up to its last position.
        hi = tl.load(Limit + batch * stride_lb + kv_head * stride_lh + pid_m * stride_lm)
        index_base = Index + batch * stride_ib + kv_head * stride_ih
        k_base = K + batch * stride_kb + kv_head * stride_kh
        v_base = V + batch * stride_vb + kv_head * stride_vh

        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
        for start in range(0, hi, BLOCK_N):
            slots = start + tl.arange(0, BLOCK_N)
            slot_valid = slots < hi
            keys = tl.load(index_base + slots * stride_ip, mask=slot_valid, other=0).to(tl.int64)
            k = tl.load(k_base + keys[None, :] * stride_kn + dims[:, None] * stride_kd,
                        mask=slot_valid[None, :] & dim_valid[:, None], other=0.0)  # (BLOCK_D, BLOCK_N): K^T
            v = tl.load(v_base + keys[:, None] * stride_vn + dims[None, :] * stride_vd,
                        mask=slot_valid[:, None] & dim_valid[None, :], other=0.0)
            scores = _dot(q, k, IEEE) * qk_scale
            allowed = row_valid[:, None] & slot_valid[None, :]
            if IS_CAUSAL:
                allowed = allowed & (keys[None, :] <= (q_pos[:, None] + causal_offset))
            acc, l_i, m_i = _softmax_step(acc, l_i, m_i, tl.where(allowed, scores, float("-inf")), v, IEEE)

        out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
        tl.store(Out + batch * stride_ob + q_pos[:, None] * stride_om + head[:, None] * stride_oh
                 + dims[None, :] * stride_od, out.to(Out.dtype.element_ty),
                 mask=row_valid[:, None] & dim_valid[None, :])

    return SimpleNamespace(sparse=_sparse_kernel)


def tile_limits(key_index: torch.Tensor, key_count: torch.Tensor, q_len: int, kv_len: int, group: int,
                block_m: int, causal: bool) -> torch.Tensor:
    """``(B, Hkv, tiles)`` int32: how many leading entries of each index row a tile of ``block_m`` flattened query
    rows needs (the kept count, or with ``causal`` the entries at or before the tile's last query position)."""
    rows = group * q_len
    tiles = -(-rows // block_m)
    counts = key_count.to(torch.int64)[..., None].expand(*key_count.shape, tiles)
    if not causal:
        return counts.to(torch.int32).contiguous()
    first = torch.arange(tiles, device=key_index.device) * block_m
    last = torch.clamp(first + block_m, max=rows) - 1
    one_head = first // q_len == last // q_len
    last_pos = torch.where(one_head, last % q_len, torch.full_like(last, q_len - 1)) + (kv_len - q_len)
    padded = torch.where(torch.arange(key_index.shape[-1], device=key_index.device) < key_count[..., None],
                         key_index.to(torch.int64), torch.iinfo(torch.int64).max)  # padding sorts last
    visible = torch.searchsorted(padded.contiguous(), last_pos.expand(*key_index.shape[:2], tiles).contiguous(),
                                 right=True)
    return torch.minimum(visible, counts).to(torch.int32).contiguous()


def sparse_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_index: torch.Tensor,
    key_count: torch.Tensor,
    *,
    causal: bool = True,
    scale: float | None = None,
) -> torch.Tensor:
    """The Triton kernel; same signature and semantics as :func:`sparse_attention_reference`. Needs q, k, v of one
    dtype (float16, bfloat16 or float32) on CUDA, or CPU tensors under ``TRITON_INTERPRET=1``."""
    dense.check_triton_inputs("sparse attention", q, k, v)
    kernels = _kernels()
    check_shapes(q, k, v, None)
    check_index(k, key_index, key_count)
    batch, q_heads, q_len, head_dim = q.shape
    kv_heads, kv_len = k.shape[1], k.shape[2]
    group = q_heads // kv_heads
    scale = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
    out = torch.empty(batch, q_len, q_heads, head_dim, device=q.device, dtype=q.dtype)
    if out.numel() == 0:
        return out
    block_m, block_n, num_warps, num_stages = dense._block_sizes(group * q_len, head_dim, q.dtype)
    limits = tile_limits(key_index, key_count, q_len, kv_len, group, block_m, causal)
    index = key_index.to(torch.int32)
    kernels.sparse[(limits.shape[-1], batch * kv_heads)](
        q, k, v, out, index, limits,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(), *index.stride(), *limits.stride(),
        kv_heads, q_len, kv_len - q_len, scale * 1.4426950408889634,  # log2(e)
        GROUP=group, HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n,
        BLOCK_D=max(16, triton.next_power_of_2(head_dim)), IS_CAUSAL=causal, IEEE=q.dtype == torch.float32,
        num_warps=num_warps, num_stages=num_stages,
    )
    return out


def sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_index: torch.Tensor,
    key_count: torch.Tensor,
    *,
    causal: bool = True,
    scale: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Attention over selected keys, ``(B, Lq, Hq, D)``; see :func:`sparse_attention_reference` for semantics.
    ``backend`` as in :func:`mmaccel.kernels.attention` (``auto``: the kernel on CUDA, the reference elsewhere)."""
    if backend not in dense.BACKENDS:
        raise ValueError(f"sparse attention backend {backend!r} is not supported; allowed: "
                         f"{', '.join(dense.BACKENDS)}")
    if backend == "triton" or (backend == "auto" and q.device.type == "cuda" and dense.triton_available()):
        return sparse_attention_triton(q, k, v, key_index, key_count, causal=causal, scale=scale)
    return sparse_attention_reference(q, k, v, key_index, key_count, causal=causal, scale=scale)
