"""PyTorch reference of mmaccel's attention op: the CPU path, and the oracle the Triton kernel is tested against.

Semantics shared with :func:`mmaccel.kernels.attention.attention_triton` (same signature):

* ``q`` is ``(B, Hq, Lq, D)``; ``k``/``v`` are ``(B, Hkv, Lk, D)`` with ``Hq % Hkv == 0``. Query head ``h`` reads
  key/value head ``h // (Hq // Hkv)`` (grouped-query attention, as transformers lays heads out).
* ``mask`` is ``None`` or broadcasts as ``(B, 1 or Hq, Lq, Lk)``: boolean (True = may attend, the output of
  transformers' ``sdpa_mask``) or additive float (entries above ``finfo.min / 2`` may attend). A mask replaces
  ``causal``. A mask whose last dimension is longer than ``Lk`` is cut to its first ``Lk`` columns.
* Without a mask and with ``causal``, query ``i`` sees keys ``j <= i + Lk - Lq`` (bottom-right aligned: the queries
  are the last ``Lq`` positions, which covers prefill, decode and chunked prefill against a cache).
* ``scale`` defaults to ``1 / sqrt(D)``. Rows that may attend to no key return exact zeros.
* The result is ``(B, Lq, Hq, D)``, contiguous, in ``q.dtype`` (the layout transformers expects back).
"""

from __future__ import annotations

import math

import torch


def normalize_mask(mask: torch.Tensor | None, kv_len: int | None = None) -> torch.Tensor | None:
    """A boolean "may attend" mask from a boolean or an additive float mask (``0`` / ``-inf`` or dtype minimum).

    With ``kv_len``, a mask with more key columns than that is cut (a view) to its first ``kv_len`` columns.
    """
    if mask is None:
        return None
    if kv_len is not None and mask.shape[-1] > kv_len:
        mask = mask[..., :kv_len]
    if mask.dtype == torch.bool:
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
    if k.shape[1] == 0 or q_heads % k.shape[1]:
        raise ValueError(f"query heads ({q_heads}) must be a multiple of key/value heads ({k.shape[1]})")
    if mask is not None:
        if mask.dim() != 4 or mask.shape[-2] != q_len or mask.shape[-1] < k.shape[2] or \
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
    """Softmax attention computed in float32; returns ``(B, Lq, Hq, D)`` contiguous in ``q.dtype``.

    ``q`` is ``(B, Hq, Lq, D)``; ``k``/``v`` are ``(B, Hkv, Lk, D)`` with ``Hq % Hkv == 0`` (grouped-query attention:
    query head ``h`` reads key/value head ``h // (Hq // Hkv)``). ``mask`` (boolean, True = may attend, or additive
    float) broadcasts as ``(B, 1|Hq, Lq, Lk)`` and replaces ``causal``. Without a mask and with ``causal``, query
    ``i`` sees keys ``j <= i + Lk - Lq`` (the queries are the last ``Lq`` positions). ``scale`` defaults to
    ``1 / sqrt(D)``. Rows that may attend to no key return zeros.
    """
    check_shapes(q, k, v, mask)
    _, q_heads, q_len, head_dim = q.shape
    kv_len = k.shape[2]
    group = q_heads // k.shape[1]
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale

    keys = k.float().repeat_interleave(group, dim=1)  # (B, Hq, Lk, D)
    values = v.float().repeat_interleave(group, dim=1)
    scores = torch.matmul(q.float(), keys.transpose(-1, -2)) * scale  # (B, Hq, Lq, Lk)

    allowed = normalize_mask(mask, kv_len)
    if allowed is None and causal:
        last_key = torch.arange(q_len, device=q.device)[:, None] + (kv_len - q_len)
        allowed = torch.arange(kv_len, device=q.device)[None, :] <= last_key
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))

    weights = torch.softmax(scores, dim=-1)
    weights = torch.nan_to_num(weights, nan=0.0)  # a row with no allowed key is all -inf: softmax gives NaN
    out = torch.matmul(weights, values)  # (B, Hq, Lq, D)
    return out.transpose(1, 2).contiguous().to(q.dtype)
