"""The ``kv="mixed"`` component: ``generate`` keeps its KV cache in :class:`~mmaccel.kv.cache.MixedPrecisionLayer`
layers without the user passing anything.

- A forward pre-hook on the model sees the cache ``generate`` created (empty, at the prefill) and gives it
  mixed-precision layers in place, so the same cache object carries on through decode.
- Each attention module gets a :class:`CacheAttention` (:data:`mmaccel.attention.KV_ATTR`), called by mmaccel's
  attention function with the layer's queries and the window's keys and values. Its scoring queries (at prefill the
  probe queries: the instruction after the last visual token and a random sample, as the prune scorer uses; in
  decode and speculative verification every new query) report their attention to the cache layer's full-precision
  window, which packs each block by those scores. Once the layer holds packed tokens, it computes the attention
  itself: :func:`~mmaccel.kernels.quantized_attention` over the packed segments and the window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..attention import KV_ATTR
from ..config import KVConfig
from ..kernels.attention_reference import normalize_mask
from ..kernels.quantized_attention import quantized_attention
from ..prune.common import PrefillInputs, allowed_keys, read_prefill_inputs, route_attention, unroute_attention
from ..prune.scoring import probe_attention, probe_positions
from .cache import MixedPrecisionLayer


@dataclass
class CacheAttention:
    """One layer's attention over its mixed-precision cache (installed as the module's :data:`KV_ATTR`)."""

    owner: MixedPrecisionKV
    layer: int

    def __call__(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: Any,
                 scaling: float | None, backend: str) -> torch.Tensor | None:
        """Score the window's tokens with this forward's scoring queries; when the layer holds packed tokens, return
        the attention over them and the window (``key`` / ``value`` are the window: what the layer's update
        returned), else ``None`` (the caller's attention reads the whole cache, which is the window)."""
        cache = self.owner.cache
        if cache is None or self.layer >= len(cache.layers):
            return None
        layer = cache.layers[self.layer]
        if not isinstance(layer, MixedPrecisionLayer) or layer.score_sum is None:
            return None
        packed = layer.packed_tokens
        mask = normalize_mask(attention_mask, packed + key.shape[2])
        window_mask = mask[..., packed:] if mask is not None else None
        q_len = query.shape[2]
        if q_len <= layer.window:  # decode and speculative verification: every query scores, as one by one
            probes = torch.arange(q_len, device=query.device)
        else:  # a prefill: the instruction after the media and a random sample
            recent = self.owner.inputs.recent if self.owner.inputs is not None else 1
            probes = probe_positions(q_len, recent, self.owner.config.random_probes, 0, query.device)
        scale = query.shape[-1] ** -0.5 if scaling is None else scaling
        attention, seen = probe_attention(query, key, allowed_keys(window_mask, query, key), probes, scale,
                                          per_probe=True)
        window = layer.score_sum.shape[-1]
        layer.observe(attention[..., -window:], seen[..., -window:])
        if packed == 0:
            return None
        return quantized_attention(
            query, layer.segments, key, value, scale=scaling, backend=backend,
            packed_mask=mask[:, 0, -1, :packed] if mask is not None else None,
            window_mask=window_mask[:, 0] if window_mask is not None else None)


@dataclass
class MixedPrecisionKV:
    """The ``kv="mixed"`` component (see the module docstring)."""

    config: KVConfig
    name: str = "kv"
    cache: Any = None
    inputs: PrefillInputs | None = None
    _modules: list[nn.Module] = field(default_factory=list)
    _hook: Any = None
    _switched_from: str | None = None
    _state: Any = None

    def install(self, model: nn.Module, state: Any) -> None:
        """Observe every layer's attention and give each new generate cache mixed-precision layers."""
        self._state = state
        self._switched_from = route_attention(model, state.adapter)
        self._modules = list(state.adapter.attention_modules)
        for index, module in enumerate(self._modules):
            setattr(module, KV_ATTR, CacheAttention(self, index))
        self._hook = model.register_forward_pre_hook(self._adopt_cache, with_kwargs=True)

    def remove(self, model: nn.Module, state: Any) -> None:
        """Undo :meth:`install` (caches already handed out keep their layers)."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        for module in self._modules:
            module.__dict__.pop(KV_ATTR, None)
        self._modules = []
        unroute_attention(model, state.adapter, self._switched_from)
        self._switched_from = None
        self.cache = self.inputs = None

    def new_layer(self) -> MixedPrecisionLayer:
        """A cache layer with this configuration."""
        c = self.config
        return MixedPrecisionLayer(high_bits=c.high_bits, low_bits=c.low_bits, salient_ratio=c.salient_ratio,
                                   window=c.window, block=c.block)

    def _adopt_cache(self, model: nn.Module, args: tuple, kwargs: dict) -> None:
        cache = kwargs.get("cache")
        if cache is None or not hasattr(cache, "layers"):
            return
        if cache is not self.cache and cache.get_seq_length() == 0:
            layers = len(self._modules)
            cache.layers = [self.new_layer() for _ in range(layers)]
            self.cache = cache
            self.inputs = read_prefill_inputs(self._state.adapter, args, kwargs, 0)
