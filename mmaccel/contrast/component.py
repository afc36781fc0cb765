"""The ``contrast`` component: ``generate`` decodes contrastively without the caller passing anything.

It wraps the instance's ``generate`` (``restore`` removes the wrapper): each call's inputs give the contrast
branch's input (:mod:`.branches`), and a :class:`~mmaccel.contrast.decoding.ContrastiveLogitsProcessor` goes first
in the call's logits processors. ``method``: ``"vcd"`` (diffusion-noised pixels, same prompt) or ``"no_image"``
(the prompt without its media, batch 1).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import LogitsProcessorList

from ..config import ContrastConfig
from .branches import vcd_inputs, without_media
from .decoding import ContrastiveLogitsProcessor, ContrastStats


@dataclass
class ContrastiveDecoding:
    """The ``contrast`` component (see the module docstring)."""

    config: ContrastConfig
    name: str = "contrast"
    stats: ContrastStats = field(default_factory=ContrastStats)

    def install(self, model: nn.Module, state: Any) -> None:
        """Wrap ``model.generate``."""
        media = state.adapter.media_token_ids()
        original = model.generate

        @functools.wraps(original)
        def generate(*args: Any, **kwargs: Any) -> Any:
            inputs = {k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor)}
            if args and isinstance(args[0], torch.Tensor):
                inputs["input_ids"] = args[0]
            if "input_ids" not in inputs:
                return original(*args, **kwargs)
            if self.config.method == "vcd":
                branch = vcd_inputs(inputs, self.config.noise_step, self.config.seed)
            else:
                branch = without_media(inputs, media)
            processor = ContrastiveLogitsProcessor(model, branch, inputs["input_ids"].shape[1], self.config.alpha,
                                                   self.config.beta, self.config.entropy_threshold, self.stats)
            given = kwargs.pop("logits_processor", None) or []
            return original(*args, logits_processor=LogitsProcessorList([processor, *given]), **kwargs)

        model.generate = generate

    def remove(self, model: nn.Module, state: Any) -> None:
        """Unwrap ``model.generate``."""
        model.__dict__.pop("generate", None)

    def cost(self) -> dict[str, Any]:
        """Steps, steps that ran the contrast branch, and tokens it read, since the component was installed."""
        return {"steps": self.stats.steps, "contrasted": self.stats.contrasted,
                "branch_tokens": self.stats.branch_tokens}
