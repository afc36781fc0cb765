"""The combiner of contrastive decoding, as a logits processor that runs its own contrast branch.

At each step: ``out = (1 + alpha) * l_o - alpha * l_c`` where ``l_o`` are the model's logits for the real input and
``l_c`` its logits for the contrast branch's input (:mod:`.branches`), then the adaptive plausibility constraint
keeps only tokens with ``p_o >= beta * max p_o`` (VCD's order: this runs before the other processors and warpers,
so greedy and sampled decoding both use it; ``alpha = 0`` leaves the logits untouched).

The contrast branch has its own KV cache. It is fed lazily: a step whose original distribution is confident
(entropy under ``entropy_threshold`` nats, for every row) keeps ``l_o`` and runs nothing, and the next step that
needs the branch feeds it every token generated since in one forward. So the cost above plain decoding is one
prefill of the contrast input plus one short forward per uncertain step.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache, LogitsProcessor


@dataclass
class ContrastStats:
    """Steps seen, steps that ran the contrast branch, tokens the branch read, and (AvisC) blind tokens found."""

    steps: int = 0
    contrasted: int = 0
    branch_tokens: int = 0
    blind_tokens: int = 0


class ContrastiveLogitsProcessor(LogitsProcessor):
    """Contrastive decoding for one ``generate`` call (see the module docstring). ``branch_prefill``, if given, is
    entered around the branch's prefill (AvisC uses it to zero the embeddings of all visual tokens but the blind
    ones)."""

    def __init__(self, model: Any, branch_inputs: dict[str, Any], prompt_length: int, alpha: float, beta: float,
                 entropy_threshold: float, stats: ContrastStats,
                 branch_prefill: Callable[[], AbstractContextManager] | None = None):
        self.model, self.branch_inputs, self.prompt_length = model, branch_inputs, prompt_length
        self.branch_prefill = branch_prefill
        self.alpha, self.log_beta, self.entropy_threshold = alpha, math.log(beta), entropy_threshold
        self.stats = stats
        self.cache: DynamicCache | None = None
        self.fed = 0  # generated tokens the branch has read
        self.rope_deltas: list | None = None  # the branch's own M-RoPE offsets, once its prefill set them

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """The combined logits for this step."""
        self.stats.steps += 1
        if self.alpha == 0:
            return scores
        logp = scores.float().log_softmax(-1)
        entropy = -(logp.exp() * torch.nan_to_num(logp, neginf=0.0)).sum(-1)
        uncertain = entropy >= self.entropy_threshold
        if not uncertain.any():
            return scores
        self.stats.contrasted += 1
        contrast = self._branch_logits(input_ids[:, self.prompt_length:]).to(scores.dtype)
        combined = (1 + self.alpha) * scores - self.alpha * contrast
        implausible = scores < scores.max(dim=-1, keepdim=True).values + self.log_beta
        combined = combined.masked_fill(implausible, float("-inf"))
        return torch.where(uncertain[:, None], combined, scores)

    @torch.no_grad()
    def _branch_logits(self, generated: torch.Tensor) -> torch.Tensor:
        """The contrast branch's next-token logits after the tokens generated so far (fed lazily)."""
        new = generated[:, self.fed:]
        context: AbstractContextManager = contextlib.nullcontext()
        if self.cache is None:
            if self.branch_prefill is not None:
                context = self.branch_prefill()
            self.cache = DynamicCache(config=self.model.config.get_text_config())
            inputs = dict(self.branch_inputs)
            inputs["input_ids"] = torch.cat([inputs["input_ids"], new], dim=1)
            read = inputs["input_ids"].shape[1]
        else:
            inputs, read = {"input_ids": new}, new.shape[1]
        mask = self.branch_inputs.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(self.branch_inputs["input_ids"])
        full = torch.cat([mask, mask.new_ones((mask.shape[0], generated.shape[1]))], dim=1)
        inputs["attention_mask"] = full
        # the text positions generate would pass (M-RoPE models add their offsets to these)
        positions = (full.long().cumsum(-1) - 1).clamp(min=0)
        inputs["position_ids"] = positions[:, -inputs["input_ids"].shape[1]:]
        # M-RoPE models keep their position offset (``rope_deltas``) as module state: the branch has its own
        holders = [m for m in self.model.modules() if hasattr(m, "rope_deltas")]
        main = [m.rope_deltas for m in holders]
        for module, delta in zip(holders, self.rope_deltas or main, strict=True):
            module.rope_deltas = delta if self.rope_deltas is not None else None
        try:
            with context:
                out = self.model(**inputs, cache=self.cache, use_cache=True, logits_to_keep=1)
            self.rope_deltas = [m.rope_deltas for m in holders]
        finally:
            for module, delta in zip(holders, main, strict=True):
                module.rope_deltas = delta
        self.fed = generated.shape[1]
        self.stats.branch_tokens += read
        return out.logits[:, -1].float()
