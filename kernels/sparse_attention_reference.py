"""PyTorch reference of mmaccel's sparse-prefill attention: the CPU path, and the oracle of the Triton kernel.

Semantics shared with :func:`mmaccel.kernels.sparse_attention.sparse_attention_triton` (same signature):

* ``q`` is ``(B, Hq, Lq, D)``; ``k``/``v`` are ``(B, Hkv, Lk, D)`` with ``Hq % Hkv == 0`` (grouped-query attention,
  as in :func:`~mmaccel.kernels.attention_reference.attention_reference`).
* ``key_index`` is ``(B, Hkv, P)`` integer positions into ``Lk``, ascending within each row, and ``key_count``
  ``(B, Hkv)`` says how many of them are used (the rest is padding). Every query head of a key/value head's group
  attends only to that head's selected keys.
* Causality stays exact: query ``i`` (position ``i + Lk - Lq``, the queries being the last ``Lq`` positions) sees
  a selected key at position ``j`` only if ``j <= i + Lk - Lq``; without ``causal`` it sees every selected key.
* ``scale`` defaults to ``1 / sqrt(D)``; a row that sees no key returns zeros; the result is ``(B, Lq, Hq, D)``,
  contiguous, in ``q.dtype``.

The torch path gathers the selected keys and values (``P`` of them instead of ``Lk``), so its cost falls with the
share of keys kept.
"""

from __future__ import annotations

import torch

from .attention_reference import attention_reference


def check_index(k: torch.Tensor, key_index: torch.Tensor, key_count: torch.Tensor) -> None:
    """Raise ``ValueError`` when ``key_index`` / ``key_count`` do not fit ``k``."""
    batch, kv_heads, kv_len = k.shape[:3]
    if key_index.dim() != 3 or key_index.shape[:2] != (batch, kv_heads) or key_index.is_floating_point():
        raise ValueError(f"key_index {tuple(key_index.shape)} ({key_index.dtype}) must be integer (batch={batch}, "
                         f"kv_heads={kv_heads}, kept)")
    if key_count.shape != (batch, kv_heads):
        raise ValueError(f"key_count {tuple(key_count.shape)} must be (batch={batch}, kv_heads={kv_heads})")
    if key_index.numel() and (int(key_index.min()) < 0 or int(key_index.max()) >= kv_len):
        raise ValueError(f"key_index values must lie in [0, {kv_len}); got [{int(key_index.min())}, "
                         f"{int(key_index.max())}]")


def selected_key_mask(key_index: torch.Tensor, key_count: torch.Tensor, q_len: int, kv_len: int,
                      causal: bool = True) -> torch.Tensor:
    """``(B, Hkv, Lq, P)`` boolean: which of the selected keys each query may attend to."""
    kept = torch.arange(key_index.shape[-1], device=key_index.device) < key_count[..., None]  # (B, Hkv, P)
    allowed = kept[:, :, None, :].expand(*key_index.shape[:2], q_len, key_index.shape[-1])
    if causal:
        last_key = torch.arange(q_len, device=key_index.device) + (kv_len - q_len)  # (Lq,)
        allowed = allowed & (key_index[:, :, None, :] <= last_key[None, None, :, None])
    return allowed


def sparse_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_index: torch.Tensor,
    key_count: torch.Tensor,
    *,
    causal: bool = True,
    scale: float | None = None,
) -> torch.Tensor:
    """Attention of every query over the selected keys only (see the module docstring); ``(B, Lq, Hq, D)``."""
    check_index(k, key_index, key_count)
    group = q.shape[1] // k.shape[1]
    gather = key_index.long()[..., None].expand(*key_index.shape, k.shape[-1])
    keys, values = k.gather(2, gather), v.gather(2, gather)  # (B, Hkv, P, D)
    allowed = selected_key_mask(key_index, key_count, q.shape[2], k.shape[2], causal)
    return attention_reference(q, keys, values, allowed.repeat_interleave(group, dim=1), scale=scale)
