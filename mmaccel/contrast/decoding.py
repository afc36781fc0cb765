"""The combiner of contrastive decoding, as a logits processor that runs its own contrast branch.

At each step: ``out = (1 + alpha) * l_o - alpha * l_c`` where ``l_o`` are the model's logits for the real input and
``l_c`` its logits for the contrast branch's input (:mod:`.branches`), then the adaptive plausibility constraint
keeps only tokens with ``p_o >= beta * max p_o`` (VCD's order: this runs before the other processors and warpers,
so greedy and sampled decoding both use it; ``alpha = 0`` leaves the logits untouched).

With ``code_exponent`` set (CODE), the strength and the cutoff follow each step's agreement of the two branches:
``D = 1/2 sum (p_o + p_c) log2(|p_o - p_c|^a + 1)`` in [0, 1], then ``alpha_t = alpha (1 - D)`` and the cutoff keeps
``p_o >= D max p_o`` — agreeing branches get a strong contrast and a loose cutoff, disagreeing ones a weak contrast
and a strict cutoff (``beta`` is not used).

The contrast branch has its own KV cache. It is fed lazily: a step whose original distribution is confident
(entropy under ``entropy_threshold`` nats, for every row) keeps ``l_o`` and runs nothing, and the next step that
needs the branch feeds it every token generated since in one forward. So the cost above plain decoding is one
prefill of the contrast input plus one short forward per uncertain step. With a :class:`~.batched.BranchRow`
(branches with the prompt's token layout), the branch's cache joins the main one after its first forward and it
decodes from then on as a second row of the main forward, every step.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache, LogitsProcessor

from ..positions import continuation_position_ids, rope_offset_holders
from .batched import BranchRow


@dataclass
class ContrastStats:
    """Steps seen, steps that ran the contrast branch, tokens the branch read, (AvisC) blind tokens found,
    (CODE) descriptions generated, (fork-merge) ``generate`` calls forked and calls whose branch decoded as a
    second row of the main forward (:mod:`.batched`)."""

    steps: int = 0
    contrasted: int = 0
    branch_tokens: int = 0
    blind_tokens: int = 0
    descriptions: int = 0
    forked: int = 0
    joined: int = 0


def bounded_divergence(p: torch.Tensor, q: torch.Tensor, exponent: float) -> torch.Tensor:
    """CODE's divergence of two distributions over the last dimension:
    ``1/2 sum (p + q) log2(|p - q|^exponent + 1)``, 0 for equal ones and at most 1."""
    return 0.5 * ((p + q) * torch.log2((p - q).abs().pow(exponent) + 1)).sum(-1)


class ContrastiveLogitsProcessor(LogitsProcessor):
    """Contrastive decoding for one ``generate`` call (see the module docstring). ``branch_prefill``, if given, is
    entered around the branch's prefill (AvisC uses it to zero the embeddings of all visual tokens but the blind
    ones)."""

    def __init__(self, model: Any, branch_inputs: dict[str, Any], prompt_length: int, alpha: float, beta: float,
                 entropy_threshold: float, stats: ContrastStats,
                 branch_prefill: Callable[[], AbstractContextManager] | None = None,
                 code_exponent: float | None = None, row: BranchRow | None = None):
        self.model, self.branch_inputs, self.prompt_length = model, branch_inputs, prompt_length
        self.row = row
        self.branch_prefill, self.code_exponent = branch_prefill, code_exponent
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
        if self.row is not None and self.row.joined:
            contrast = self.row.logits[:, -1].float()
        else:
            main_cache = self.row.last_cache if self.row is not None else None
            contrast = self._branch_logits(input_ids[:, self.prompt_length:])
            if self.row is not None and self.row.join(main_cache, self.cache):
                self.stats.joined += 1
        alpha: float | torch.Tensor = self.alpha
        log_beta: float | torch.Tensor = self.log_beta
        if self.code_exponent is not None:
            divergence = bounded_divergence(logp.exp(), contrast.softmax(-1), self.code_exponent)[:, None]
            alpha = self.alpha * (1 - divergence)
            log_beta = divergence.clamp_min(1e-30).log()
        combined = ((1 + alpha) * scores.float() - alpha * contrast).to(scores.dtype)
        implausible = scores < scores.max(dim=-1, keepdim=True).values + log_beta
        combined = combined.masked_fill(implausible, float("-inf"))
        return torch.where(uncertain[:, None], combined, scores)

    @functools.cached_property
    def _offset_holders(self) -> list:
        """The model's modules that keep an M-RoPE offset (found once: the walk is over every module)."""
        return rope_offset_holders(self.model)

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
        # M-RoPE models keep their position offset (``rope_deltas``) as module state: the branch has its own
        holders = self._offset_holders
        offset = next((d for d in self.rope_deltas or [] if d is not None), None)
        positions = continuation_position_ids(full, inputs["input_ids"].shape[1], bool(holders), offset)
        if positions is not None:
            inputs["position_ids"] = positions
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
