"""The contrast branch decoded as a second row of the model's own forward.

Decoding is memory-bound: a forward over two rows reads the weights once, about what one row costs on a GPU. When
the contrast input has the prompt's token layout (VCD's noised media, AvisC's blind tokens, a masked modality), the
branch's cache has the main cache's length, so after the branch's own prefill (:class:`~.decoding.
ContrastiveLogitsProcessor` runs it, as before) the two caches are stacked into one of two rows (:meth:`BranchRow.
join`) and every later step runs both rows in generate's single forward:

- a pre-hook on the language model repeats the new tokens' embeddings, mask and positions into a second row (the
  same token goes to both branches, as in the unbatched branch);
- a hook on the model's forward hands ``generate`` the first row's logits and keeps the second row's
  (:attr:`BranchRow.logits`) for the combiner.

:meth:`BranchRow.leave` takes the second row off the cache when ``generate`` returns, so the caller gets the main
cache alone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _row_tensors(cache: Any) -> list[tuple[Any, str]]:
    """Every (layer, attribute) of a cache holding a per-row key or value tensor."""
    found = []
    for layer in getattr(cache, "layers", []):
        for name in ("keys", "values"):
            if isinstance(getattr(layer, name, None), torch.Tensor):
                found.append((layer, name))
    return found


class BranchRow:
    """Hooks that run a joined contrast branch as row 2 of each forward (see the module docstring)."""

    def __init__(self, model: nn.Module, language_model: nn.Module) -> None:
        self.cache: Any = None  # the main cache, once joined
        self.last_cache: Any = None  # the cache the model's latest forward returned (generate's, between steps)
        self.logits: torch.Tensor | None = None  # the branch's logits of the latest forward
        self._handles = [language_model.register_forward_pre_hook(self._add_row, with_kwargs=True),
                         model.register_forward_hook(self._split_rows)]

    @property
    def joined(self) -> bool:
        """Whether the branch decodes as the second row."""
        return self.cache is not None

    def remove(self) -> None:
        """Take the hooks off."""
        for handle in self._handles:
            handle.remove()

    def join(self, main_cache: Any, branch_cache: Any) -> bool:
        """Stack ``branch_cache`` under ``main_cache`` (generate's) as its second row; ``False`` (nothing changed)
        when the two differ in shape, e.g. when the prompts were pruned differently."""
        if main_cache is None or self.joined:
            return False
        main, branch = _row_tensors(main_cache), _row_tensors(branch_cache)
        if not main or len(main) != len(branch):
            return False
        if any(getattr(*m).shape != getattr(*b).shape or getattr(*m).shape[0] != 1
               for m, b in zip(main, branch, strict=True)):
            return False
        for (layer, name), (branch_layer, branch_name) in zip(main, branch, strict=True):
            setattr(layer, name, torch.cat([getattr(layer, name), getattr(branch_layer, branch_name)], dim=0))
        self.cache = main_cache
        return True

    def leave(self) -> None:
        """Drop the second row from the main cache and stop adding it."""
        if self.cache is not None:
            for layer, name in _row_tensors(self.cache):
                setattr(layer, name, getattr(layer, name)[:1].clone())  # a view would keep both rows alive
        self.cache = self.last_cache = self.logits = None

    def _add_row(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        if not self.joined:
            return None
        embeds = kwargs.get("inputs_embeds")
        if embeds is None or embeds.shape[0] != 1:
            return None
        doubled = {"inputs_embeds": embeds.expand(2, -1, -1)}
        mask = kwargs.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.dim() == 2:
            doubled["attention_mask"] = mask.expand(2, -1)
        positions = kwargs.get("position_ids")
        if isinstance(positions, torch.Tensor):
            doubled["position_ids"] = positions.expand(2, -1) if positions.dim() == 2 else positions.expand(-1, 2, -1)
        return args, {**kwargs, **doubled}

    def _split_rows(self, module: nn.Module, args: tuple, output: Any) -> Any:
        cache = getattr(output, "cache", None)
        if cache is not None:
            self.last_cache = cache
        logits = getattr(output, "logits", None)
        if not self.joined or logits is None or logits.shape[0] != 2:
            return None
        self.logits = logits[1:2]
        output.logits = logits[:1]
        for name in ("hidden_states", "attentions"):
            states = getattr(output, name, None)
            if isinstance(states, tuple):
                setattr(output, name, tuple(s[:1] for s in states))
        return output
