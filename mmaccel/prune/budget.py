"""Fixed-budget visual-token pruning after layer K (FastV-style), as an mmaccel component
(``accelerate(model, prune="budget")``, preset ``fast``).

At the prefill forward of ``generate``:

1. layer ``prune_layer - 1`` scores every key with probe queries (the normalized score of :mod:`.scoring`, averaged
   over key/value heads), while its attention runs dense as usual;
2. each contiguous run of visual tokens (an image, or a video's frames) keeps its ``keep_ratio`` best-scored tokens
   (at least one); text and padding are always kept. Rows that keep fewer tokens than the longest row keep their
   next best visual tokens until all rows have the same length, so the batch stays rectangular;
3. from layer ``prune_layer`` on, the sequence is cut to the kept tokens: each later layer receives the kept hidden
   states, position embeddings and mask rows/columns, so it computes — and caches — only those tokens. Positions are
   the tokens' original ones (RoPE and M-RoPE), since the position embeddings were computed for the full prompt.

At decode, layers from ``prune_layer`` on see the kept cache entries plus the generated tokens: their attention mask
is cut to those columns. Nothing else changes, so ``generate`` (greedy, sampling, left-padded batches) works as
usual, and the KV cache of the later layers shrinks with the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..attention import SPARSE_ATTR
from ..config import PruneConfig
from .common import (
    PrefillInputs,
    is_prefill_of,
    keep_to_index,
    probe_scores,
    read_prefill_inputs,
    route_attention,
    unroute_attention,
)


@dataclass
class PrunePlan:
    """The tokens the later layers keep: ascending original positions ``kept`` ``(B, L')`` of a prompt of
    ``full_length`` tokens."""

    kept: torch.Tensor
    full_length: int


def visual_runs(visual: torch.Tensor) -> list[list[tuple[int, int]]]:
    """Per row, the ``[start, end)`` ranges of consecutive visual tokens."""
    runs: list[list[tuple[int, int]]] = []
    for row in visual.tolist():
        spans, start = [], None
        for position, is_visual in enumerate(row + [False]):
            if is_visual and start is None:
                start = position
            elif not is_visual and start is not None:
                spans.append((start, position))
                start = None
        runs.append(spans)
    return runs


def plan_kept_tokens(scores: torch.Tensor, inputs: PrefillInputs, keep_ratio: float) -> torch.Tensor:
    """``(B, L')`` ascending positions to keep: all non-visual tokens, the best ``keep_ratio`` of each visual run by
    ``scores`` ``(B, L)``, then (rows that kept fewer) their next best visual tokens, up to a common length."""
    keep = ~inputs.visual.clone()
    for row, spans in enumerate(visual_runs(inputs.visual)):
        for start, end in spans:
            count = max(1, round(keep_ratio * (end - start)))
            best = torch.topk(scores[row, start:end], count).indices + start
            keep[row, best] = True
    target = int(keep.sum(-1).max())
    for row in range(keep.shape[0]):
        missing = target - int(keep[row].sum())
        if missing > 0:
            candidates = scores[row].masked_fill(keep[row] | ~inputs.visual[row], float("-inf"))
            keep[row, torch.topk(candidates, missing).indices] = True
    return keep_to_index(keep)[0]  # every row keeps ``target`` tokens, so nothing is padded


@dataclass
class BudgetScorer:
    """Installed on layer ``prune_layer - 1``'s attention module: scores the prefill, plans, attends densely."""

    owner: FixedBudgetPruning

    def __call__(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: Any,
                 scaling: float | None, backend: str) -> None:
        """Record the prune plan of this prefill; always ``None``, so the attention itself runs dense."""
        inputs = self.owner.inputs
        if is_prefill_of(inputs, query, key):
            config = self.owner.config
            scores = probe_scores(query, key, attention_mask, inputs, config.random_probes, config.seed, scaling)
            self.owner.scores = scores
            self.owner.set_plan(PrunePlan(plan_kept_tokens(scores.mean(1), inputs, config.keep_ratio),
                                          query.shape[2]))
        return None


def _take(tensor: torch.Tensor, dim: int, batch_dim: int, index: torch.Tensor) -> torch.Tensor:
    """``tensor`` cut along ``dim`` to the positions ``index`` ``(B, n)`` of each batch row (``batch_dim``; a batch
    dimension of 1 is broadcast)."""
    dim, batch_dim = dim % tensor.dim(), batch_dim % tensor.dim()
    if tensor.shape[batch_dim] != index.shape[0]:
        tensor = tensor.expand(*[index.shape[0] if d == batch_dim else -1 for d in range(tensor.dim())])
    shape = [1] * tensor.dim()
    shape[batch_dim], shape[dim] = index.shape
    target = list(tensor.shape)
    target[dim] = index.shape[1]
    return tensor.gather(dim, index.view(shape).expand(target))


@dataclass
class FixedBudgetPruning:
    """The ``prune="budget"`` component."""

    config: PruneConfig
    name: str = "prune"
    inputs: PrefillInputs | None = None
    plan: PrunePlan | None = None
    #: Normalized key scores ``(B, Hkv, L)`` of the scoring layer at the last prefill.
    scores: torch.Tensor | None = None
    _hooks: list[Any] = field(default_factory=list)
    _scorer_module: nn.Module | None = None
    _switched_from: str | None = None
    _state: Any = None

    def install(self, model: nn.Module, state: Any) -> None:
        """Score at layer ``prune_layer - 1``; cut the sequence at every layer from ``prune_layer`` on."""
        adapter = state.adapter
        layers = list(adapter.decoder_layers)
        if not 1 <= self.config.prune_layer < len(layers):
            raise ValueError(f"prune.prune_layer={self.config.prune_layer} must be between 1 and {len(layers) - 1} "
                             f"for this model ({len(layers)} decoder layers)")
        self._state = state
        self._switched_from = route_attention(model, adapter)
        self._scorer_module = adapter.attention_modules[self.config.prune_layer - 1]
        setattr(self._scorer_module, SPARSE_ATTR, BudgetScorer(self))
        self._hooks.append(model.register_forward_pre_hook(self._watch_inputs, with_kwargs=True))
        for layer in layers[self.config.prune_layer:]:
            self._hooks.append(layer.register_forward_pre_hook(self._cut_layer_inputs, with_kwargs=True))

    def remove(self, model: nn.Module, state: Any) -> None:
        """Undo :meth:`install`."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        if self._scorer_module is not None:
            self._scorer_module.__dict__.pop(SPARSE_ATTR, None)
            self._scorer_module = None
        unroute_attention(model, state.adapter, self._switched_from)
        self._switched_from = None
        self.inputs = self.plan = None

    def _watch_inputs(self, model: nn.Module, args: tuple, kwargs: dict) -> None:
        inputs = read_prefill_inputs(self._state.adapter, args, kwargs, self.config.recent_probes)
        if inputs is not None:  # a new prompt: its own plan comes at the scoring layer
            self.inputs, self.plan, self.scores = inputs, None, None

    def set_plan(self, plan: PrunePlan) -> None:
        """Adopt ``plan`` and report ``visual_tokens_kept`` (averaged over layers, summed over rows)."""
        self.plan = plan
        visual = self.inputs.visual
        kept_visual = float(visual.gather(1, plan.kept).sum())
        layers = len(self._state.adapter.decoder_layers)
        cut = layers - self.config.prune_layer
        self._state.stats["visual_tokens_kept"] = (float(visual.sum()) * (layers - cut) + kept_visual * cut) / layers

    def _cut_layer_inputs(self, layer: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        plan = self.plan
        if plan is None:
            return None
        hidden = args[0] if args else kwargs["hidden_states"]
        full, kept = plan.full_length, plan.kept
        if hidden.shape[1] == full:  # the first cut layer at prefill: drop the pruned tokens' hidden states
            hidden = _take(hidden, 1, 0, kept)
        kwargs = dict(kwargs)
        mask = kwargs.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.dim() == 4:
            if mask.shape[-2] == full:
                mask = _take(mask, -2, 0, kept)
            new_columns = torch.arange(full, mask.shape[-1], device=kept.device).expand(kept.shape[0], -1)
            mask = _take(mask, -1, 0, torch.cat([kept, new_columns], dim=1))
            kwargs["attention_mask"] = mask
        embeddings = kwargs.get("position_embeddings")
        if embeddings is not None and embeddings[0].shape[-2] == full:
            kwargs["position_embeddings"] = tuple(_take(e, -2, -3, kept) for e in embeddings)
        positions = kwargs.get("position_ids")
        if isinstance(positions, torch.Tensor) and positions.shape[-1] == full:
            kwargs["position_ids"] = _take(positions, -1, -2, kept)
        if args:
            return (hidden, *args[1:]), kwargs
        kwargs["hidden_states"] = hidden
        return args, kwargs
