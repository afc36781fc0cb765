"""PyTorch reference of mmaccel's attention op: the CPU path, and the oracle the Triton kernel is tested against."""

from __future__ import annotations

import math

import torch


def normalize_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """A boolean "may attend" mask from a boolean or an additive float mask (``0`` / ``-inf`` or dtype minimum)."""
    if mask is None or mask.dtype == torch.bool:
        return mask
    return mask > torch.finfo(mask.dtype).min / 2


def check_shapes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> None:
    """Raise ``ValueError`` when q, k, v and the mask do not fit together."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"q, k, v must be 4-D (batch, heads, length, head_dim); got {q.dim()}, {k.dim()}, {v.dim()}")
    batch, q_heads, q_len, head_dim = q.shape
    if k.shape != v.shape or k.shape[0] != batch or k.shape[3] != head_dim:
        raise ValueError(f"k {tuple(k.shape)} and v {tuple(v.shape)} must be (batch={batch}, kv_heads, kv_len, "
                         f"head_dim={head_dim})")
    if q_heads % k.shape[1]:
        raise ValueError(f"query heads ({q_heads}) must be a multiple of key/value heads ({k.shape[1]})")
    if mask is not None:
        if mask.dim() != 4 or mask.shape[-2] != q_len or mask.shape[-1] != k.shape[2] or \
                mask.shape[0] not in (1, batch) or mask.shape[1] not in (1, q_heads):
            raise ValueError(f"mask {tuple(mask.shape)} must broadcast as (batch={batch}, 1 or {q_heads}, "
                             f"q_len={q_len}, kv_len={k.shape[2]})")


def attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    causal: bool = True,
    scale: float | None = None,
) -> torch.Tensor:
    """Softmax attention, computed in float32; returns ``(B, Lq, Hq, D)`` in ``q.dtype``.

    ``q`` is ``(B, Hq, Lq, D)``; ``k``/``v`` are ``(B, Hkv, Lk, D)`` with ``Hq % Hkv == 0`` (grouped-query attention:
    query head ``h`` reads key/value head ``h // (Hq // Hkv)``). ``mask`` (boolean, True = may attend, or additive
    float) broadcasts as ``(B, 1|Hq, Lq, Lk)`` and replaces ``causal``. Without a mask and with ``causal``, query
    ``i`` sees keys ``j <= i + Lk - Lq`` (the queries are the last ``Lq`` positions). Rows that may attend to no key
    return zeros.
    """
    check_shapes(q, k, v, mask)
    _, q_heads, q_len, head_dim = q.shape
    kv_len = k.shape[2]
    group = q_heads // k.shape[1]
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    keys = k.float().repeat_interleave(group, dim=1)
    values = v.float().repeat_interleave(group, dim=1)
    scores = torch.matmul(q.float(), keys.transpose(-1, -2)) * scale
    allowed = normalize_mask(mask)
    if allowed is None and causal:
        rows = torch.arange(q_len, device=q.device)[:, None] + (kv_len - q_len)
        allowed = torch.arange(kv_len, device=q.device)[None, :] <= rows
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    weights = torch.nan_to_num(weights, nan=0.0)  # rows with no allowed key
    out = torch.matmul(weights, values)
    return out.transpose(1, 2).contiguous().to(q.dtype)
