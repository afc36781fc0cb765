"""The ``spec`` component: ``generate`` decodes speculatively without the caller passing anything.

transformers' assisted decoding does the verification (one forward over the draft, the longest prefix that the
model's own processed logits agree with plus one token of the model's; under sampling, the model's tokens are
sampled and compared with the deterministic draft, which keeps the distribution) and rolls the cache back with
``crop``, which mmaccel's mixed-precision cache supports. This component chooses it and supplies the drafter:

- it sets the model's ``generation_config.prompt_lookup_num_tokens``, which routes ``generate`` to assisted
  decoding, and restores it on removal;
- it replaces the instance's ``_get_candidate_generator`` so that the drafter is mmaccel's (a caller who passes
  ``assistant_model`` gets transformers' own);
- it keeps the acceptance statistics (:meth:`SpeculativeDecoding.acceptance`).

Assisted decoding is batch 1: a batch of several rows raises transformers' "assisted generate is only supported
for batch_size = 1".

With ``kv="mixed"`` each verification is exact against the cache as it stands, but the cache itself depends on how
tokens were grouped into forwards: a block is packed at the first update that finds the window full, with the
saliency scores gathered so far, and a verification forward scores several queries at once. So a speculative run
may pack a block a few queries later than a token-by-token run and keep other tokens at high bits; its answer can
then differ from the non-speculative mixed-precision answer (it is never a wrong verification).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..config import SpecConfig
from .draft_head import DraftHead, DraftHeadCandidates
from .prompt_lookup import PromptLookupCandidates
from .stats import AcceptanceStats


@dataclass
class SpeculativeDecoding:
    """The ``spec`` component (see the module docstring)."""

    config: SpecConfig
    name: str = "spec"
    stats: AcceptanceStats = field(default_factory=AcceptanceStats)
    _saved_lookup: Any = None
    _media_token_ids: set[int] = field(default_factory=set)
    _head: DraftHead | None = None

    def install(self, model: nn.Module, state: Any) -> None:
        """Route ``generate`` to assisted decoding with mmaccel's drafter (loading the draft head first, so that a
        missing one fails here)."""
        if self.config.method == "draft_head":
            folder = self.config.head or getattr(model.config, "_name_or_path", "")
            self._head = DraftHead.load(state.adapter, folder).to(next(model.parameters()).device,
                                                                  next(model.parameters()).dtype).eval()
        self._media_token_ids = state.adapter.media_token_ids()
        self._saved_lookup = model.generation_config.prompt_lookup_num_tokens
        model.generation_config.prompt_lookup_num_tokens = self.config.num_tokens
        original = type(model)._get_candidate_generator

        def candidate_generator(generation_config: Any, input_ids: Any, inputs_tensor: Any, logits_processor: Any,
                                model_kwargs: dict, assistant_model: Any = None, **kwargs: Any) -> Any:
            if assistant_model is not None:
                return original(model, generation_config, input_ids, inputs_tensor, logits_processor, model_kwargs,
                                assistant_model, **kwargs)
            if self._head is not None:
                return DraftHeadCandidates(model, state.adapter, self._head, generation_config.prompt_lookup_num_tokens
                                           or self.config.num_tokens, generation_config._eos_token_tensor,
                                           generation_config.max_length, self.stats)
            return PromptLookupCandidates(
                num_tokens=generation_config.prompt_lookup_num_tokens or self.config.num_tokens,
                max_ngram=self.config.max_ngram, min_ngram=self.config.min_ngram,
                media_token_ids=self._media_token_ids, eos_token_ids=generation_config._eos_token_tensor,
                max_length=generation_config.max_length, stats=self.stats)

        model._get_candidate_generator = candidate_generator

    def remove(self, model: nn.Module, state: Any) -> None:
        """Give ``generate`` its own decoding back."""
        model.__dict__.pop("_get_candidate_generator", None)
        model.generation_config.prompt_lookup_num_tokens = self._saved_lookup
        self._head = None

    def acceptance(self) -> dict[str, Any]:
        """Mean accepted length and acceptance rates since the last :meth:`reset_stats`."""
        return self.stats.summary()

    def reset_stats(self) -> None:
        """Start counting afresh."""
        self.stats.reset()
