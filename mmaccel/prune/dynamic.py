"""ZipVL-style dynamic sparse attention at prefill, as an mmaccel component (``accelerate(model, prune="dynamic")``).

At the prefill forward of ``generate``, each decoder layer from ``dense_layers`` on:

1. scores every key with probe queries (:func:`~mmaccel.prune.scoring.normalized_scores`);
2. keeps all text tokens, and of the visual tokens the smallest set whose scores reach ``tau`` of their total, per
   batch row and key/value head (:func:`~mmaccel.prune.scoring.keep_by_mass`);
3. attends with every query, at its own position, over the kept keys only
   (:func:`mmaccel.kernels.sparse_attention`: Triton on CUDA, the gathering PyTorch path elsewhere).

Decode steps and the first ``dense_layers`` layers are untouched; the KV cache keeps every token (the mixed-precision
cache decides how precisely). Each layer's normalized scores of the last prefill are kept on the component
(:attr:`DynamicSparsePrefill.scores`) for reuse by the KV cache. Which tokens are visual comes from the model's
adapter, so no family's token positions are hard-coded; positions (RoPE, M-RoPE) are untouched because no token is
removed from the sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..attention import SPARSE_ATTR
from ..config import PruneConfig
from ..kernels import sparse_attention
from .common import (
    PrefillInputs,
    is_prefill_of,
    keep_to_index,
    probe_scores,
    read_prefill_inputs,
    route_attention,
    unroute_attention,
)
from .scoring import keep_by_mass


@dataclass
class SparseLayer:
    """The prefill attention of one decoder layer (installed as the module's :data:`SPARSE_ATTR`)."""

    owner: DynamicSparsePrefill
    layer: int

    def __call__(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: Any,
                 scaling: float | None, backend: str) -> torch.Tensor | None:
        """The layer's sparse attention ``(B, L, Hq, D)``, or ``None`` when this call is not a prefill of the
        prompt the hook saw (decode, a chunk against a cache, an input without ids): the caller then runs dense."""
        inputs = self.owner.inputs
        if not is_prefill_of(inputs, query, key):
            return None
        config = self.owner.config
        scores = probe_scores(query, key, attention_mask, inputs, config.random_probes, config.seed, scaling)
        keep = keep_by_mass(scores, inputs.visual, config.tau) | (inputs.real & ~inputs.visual)[:, None, :]
        self.owner.record(self.layer, scores, (keep & inputs.visual[:, None, :]).sum(-1))
        index, count = keep_to_index(keep)
        return sparse_attention(query, key, value, index, count, causal=True, scale=scaling, backend=backend)


@dataclass
class DynamicSparsePrefill:
    """The ``prune="dynamic"`` component."""

    config: PruneConfig
    name: str = "prune"
    inputs: PrefillInputs | None = None
    #: Normalized key scores ``(B, Hkv, L)`` of each sparse layer at the last prefill.
    scores: dict[int, torch.Tensor] = field(default_factory=dict)
    kept_visual: dict[int, torch.Tensor] = field(default_factory=dict)
    _modules: list[nn.Module] = field(default_factory=list)
    _hook: Any = None
    _switched_from: str | None = None
    _state: Any = None

    def install(self, model: nn.Module, state: Any) -> None:
        """Route the language model's attention through mmaccel's function, give every layer from
        ``dense_layers`` on its :class:`SparseLayer`, and watch the model's inputs."""
        adapter = state.adapter
        self._switched_from = route_attention(model, adapter)
        self._state = state
        self._modules = list(adapter.attention_modules)[self.config.dense_layers:]
        for offset, module in enumerate(self._modules):
            setattr(module, SPARSE_ATTR, SparseLayer(self, self.config.dense_layers + offset))
        self._hook = model.register_forward_pre_hook(self._watch_inputs, with_kwargs=True)

    def remove(self, model: nn.Module, state: Any) -> None:
        """Undo :meth:`install`."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        for module in self._modules:
            module.__dict__.pop(SPARSE_ATTR, None)
        self._modules = []
        unroute_attention(model, state.adapter, self._switched_from)
        self._switched_from = None
        self.inputs = None

    def _watch_inputs(self, model: nn.Module, args: tuple, kwargs: dict) -> None:
        inputs = read_prefill_inputs(self._state.adapter, args, kwargs, self.config.recent_probes)
        if inputs is None:
            return  # a decode step: nothing to do until the next prefill
        self.inputs = inputs
        self.scores.clear()
        self.kept_visual.clear()

    def record(self, layer: int, scores: torch.Tensor, kept_visual: torch.Tensor) -> None:
        """Keep a sparse layer's scores and kept counts, and update ``visual_tokens_kept`` in the patch stats: the
        visual tokens attended to, averaged over layers (dense layers count them all) and key/value heads, summed
        over rows."""
        self.scores[layer] = scores
        self.kept_visual[layer] = kept_visual
        total = float(self.inputs.visual.sum())
        layers = self.config.dense_layers + len(self._modules)
        kept = sum(float(k.float().mean(-1).sum()) for k in self.kept_visual.values())
        dense = total * (layers - len(self.kept_visual))
        self._state.stats["visual_tokens_kept"] = (kept + dense) / max(1, layers)

