"""mmaccel's attention function, registered in transformers' attention and mask interfaces.

The name is registered process-wide, but only model instances that ``accelerate`` switched to it use it, and each
attention module carries its own backend choice (``module._mmaccel_attention``), so two models in one process can
be configured differently. The mask entry is transformers' own ``sdpa_mask``: without it, padding would be
silently dropped (transformers returns no mask for an unknown mask interface).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from .kernels import attention as attention_op
from .kernels import triton_unusable_reason

#: The name under which the attention function and its mask function are registered. It must not contain "flash"
#: (generate would change its masks) nor look like "org/repo" (it would be read as a Hub kernel).
ATTENTION_NAME = "mmaccel"
#: Attribute set on each patched attention module: the kernel backend it runs ("auto", "torch" or "triton").
BACKEND_ATTR = "_mmaccel_attention"
#: Attribute set on the attention modules of sparse-prefill layers: a callable computing their prefill attention
#: (see :mod:`mmaccel.prune.dynamic`), which returns ``None`` for calls it does not handle.
SPARSE_ATTR = "_mmaccel_sparse_prefill"
#: Attribute set on attention modules whose cache layer is a mixed-precision one (:mod:`mmaccel.kv.component`): called
#: with the layer's queries, keys and values first; it scores the cache window and returns the attention over the
#: packed cache and the window, or ``None`` while nothing is packed.
KV_ATTR = "_mmaccel_kv_observer"
#: Attribute set on attention modules whose queries and keys someone reads (e.g. AvisC's blind-token search,
#: :mod:`mmaccel.contrast.blind`): called with ``(query, key, attention_mask, scaling)`` before the attention is
#: computed, which it does not change.
OBSERVER_ATTR = "_mmaccel_attention_observer"


def mmaccel_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention with transformers' calling convention, computed by mmaccel's kernels.

    ``query`` is ``(B, Hq, Lq, D)``; ``key``/``value`` are ``(B, Hkv, Lk, D)`` (not GQA-repeated); the mask is the
    boolean output of ``sdpa_mask`` or ``None`` for plain causal attention. Returns ``(B, Lq, Hq, D)``.

    A module with a mixed-precision cache (:data:`KV_ATTR`) lets it compute attention once its cache holds packed
    tokens; a module with a sparse-prefill callable (:data:`SPARSE_ATTR`) lets it compute the prefill; everything
    else runs dense: through the module's kernel backend (:data:`BACKEND_ATTR`) when the ``kernels`` component set
    one, else through transformers' SDPA, as the unpatched model would.
    """
    backend = getattr(module, BACKEND_ATTR, None)
    observer = getattr(module, OBSERVER_ATTR, None)
    if observer is not None:
        observer(query, key, attention_mask, scaling)
    cache_attention = getattr(module, KV_ATTR, None)
    if cache_attention is not None and not module.training:
        out = cache_attention(query, key, value, attention_mask, scaling, backend or "auto")
        if out is not None:
            return out, None
    sparse = getattr(module, SPARSE_ATTR, None)
    if sparse is not None and not module.training:
        out = sparse(query, key, value, attention_mask, scaling, backend or "auto")
        if out is not None:
            return out, None
    if backend is None or (dropout > 0.0 and module.training):
        # Training with attention dropout is not what these inference kernels are for.
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    causal = bool(getattr(module, "is_causal", True))
    out = attention_op(query, key, value, attention_mask, causal=causal, scale=scaling, backend=backend)
    return out, None


def register_attention() -> None:
    """Register :func:`mmaccel_attention_forward` and its mask function under :data:`ATTENTION_NAME` (idempotent)."""
    AttentionInterface.register(ATTENTION_NAME, mmaccel_attention_forward)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)


def check_triton_usable(device: torch.device) -> None:
    """Raise ``RuntimeError`` now, not at the first forward, when ``kernels="triton"`` cannot run on ``device``."""
    reason = triton_unusable_reason(device)
    if reason is not None:
        raise RuntimeError(f"kernels='triton' cannot run on this model: {reason}; use kernels='auto' to pick the "
                           "PyTorch reference where Triton cannot run, or kernels='torch'")
