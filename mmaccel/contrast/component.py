"""The ``contrast`` component: ``generate`` decodes contrastively without the caller passing anything.

It wraps the instance's ``generate`` (``restore`` removes the wrapper): each call's inputs give the contrast
branch's input (:mod:`.branches`), and a :class:`~mmaccel.contrast.decoding.ContrastiveLogitsProcessor` goes first
in the call's logits processors. ``method``: ``"vcd"`` (diffusion-noised pixels, same prompt), ``"avisc"`` (the
same prompt with only the blind visual tokens' embeddings, :mod:`.blind`; the language model runs mmaccel's
attention function so that the prefill's attention can be read) or ``"no_image"`` (the prompt without its media,
batch 1).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import LogitsProcessorList

from ..config import ContrastConfig
from ..prune.common import route_attention, unroute_attention
from .blind import BlindTokenSearch, only_tokens_kept
from .branches import vcd_inputs, without_media
from .decoding import ContrastiveLogitsProcessor, ContrastStats


@dataclass
class ContrastiveDecoding:
    """The ``contrast`` component (see the module docstring)."""

    config: ContrastConfig
    name: str = "contrast"
    stats: ContrastStats = field(default_factory=ContrastStats)
    _search: BlindTokenSearch | None = None
    _switched_from: str | None = None

    def install(self, model: nn.Module, state: Any) -> None:
        """Wrap ``model.generate`` (AvisC: also watch the attention modules)."""
        adapter = state.adapter
        media = adapter.media_token_ids()
        original = model.generate
        if self.config.method == "avisc":
            self._switched_from = route_attention(model, adapter)
            self._search = BlindTokenSearch(adapter.attention_modules)

        def avisc_prefill(input_ids: torch.Tensor) -> Any:
            visual = adapter.visual_token_mask(input_ids)
            blind = self._search.blind_tokens(visual, self.config.blind_layers, self.config.blind_lambda)
            self.stats.blind_tokens += int(blind.sum())
            return only_tokens_kept(adapter.language_model, ~visual | blind)

        @functools.wraps(original)
        def generate(*args: Any, **kwargs: Any) -> Any:
            inputs = {k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor)}
            if args and isinstance(args[0], torch.Tensor):
                inputs["input_ids"] = args[0]
            if "input_ids" not in inputs:
                return original(*args, **kwargs)
            branch_prefill = None
            if self.config.method == "vcd":
                branch = vcd_inputs(inputs, self.config.noise_step, self.config.seed)
            elif self.config.method == "avisc":
                branch = inputs
                branch_prefill = functools.partial(avisc_prefill, inputs["input_ids"])
                self._search.arm()
            else:
                branch = without_media(inputs, media)
            processor = ContrastiveLogitsProcessor(model, branch, inputs["input_ids"].shape[1], self.config.alpha,
                                                   self.config.beta, self.config.entropy_threshold, self.stats,
                                                   branch_prefill)
            given = kwargs.pop("logits_processor", None) or []
            return original(*args, logits_processor=LogitsProcessorList([processor, *given]), **kwargs)

        model.generate = generate

    def remove(self, model: nn.Module, state: Any) -> None:
        """Unwrap ``model.generate``; give the attention modules back."""
        model.__dict__.pop("generate", None)
        if self._search is not None:
            self._search.remove()
            self._search = None
        unroute_attention(model, state.adapter, self._switched_from)
        self._switched_from = None

    def cost(self) -> dict[str, Any]:
        """Steps, steps that ran the contrast branch, tokens it read, and (AvisC) blind tokens found, since the
        component was installed."""
        return {"steps": self.stats.steps, "contrasted": self.stats.contrasted,
                "branch_tokens": self.stats.branch_tokens, "blind_tokens": self.stats.blind_tokens}
