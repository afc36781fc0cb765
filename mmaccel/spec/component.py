"""The ``spec`` component: ``generate`` decodes speculatively without the caller passing anything.

transformers' assisted decoding does the verification (one forward over the draft, the longest prefix that the
model's own processed logits agree with plus one token of the model's; under sampling, the model's tokens are
sampled and compared with the deterministic draft, which keeps the distribution) and rolls the cache back with
``crop``, which mmaccel's mixed-precision cache supports. This component chooses it and supplies the drafter:

- it sets the model's ``generation_config.prompt_lookup_num_tokens``, which routes ``generate`` to assisted
  decoding, and restores it on removal;
- it replaces the instance's ``_get_candidate_generator`` so that the drafter is mmaccel's (a caller who passes
  ``assistant_model`` gets transformers' own);
- with a drafter model (``draft_model``), it wraps the instance's ``generate`` to hand the call's raw media inputs
  to the drafter (``generate`` drops them once its own encoders have run);
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

import functools
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..config import ConfigError, SpecConfig
from .draft_head import DraftHead, DraftHeadCandidates
from .draft_model import DraftModelCandidates, default_drafter, media_inputs
from .prompt_lookup import PromptLookupCandidates
from .stats import AcceptanceStats

#: The drafter last loaded from ``spec.drafter``, by (name, device, dtype).
_LOADED_DRAFTERS: dict[tuple, Any] = {}


@dataclass
class SpeculativeDecoding:
    """The ``spec`` component (see the module docstring)."""

    config: SpecConfig
    name: str = "spec"
    stats: AcceptanceStats = field(default_factory=AcceptanceStats)
    _saved_lookup: Any = None
    _media_token_ids: set[int] = field(default_factory=set)
    _head: DraftHead | None = None
    _drafter: Any = None
    _call_media: dict = field(default_factory=dict)

    def install(self, model: nn.Module, state: Any) -> None:
        """Route ``generate`` to assisted decoding with mmaccel's drafter (loading the draft head first, so that a
        missing one fails here)."""
        if self.config.method == "draft_head":
            folder = self.config.head or getattr(model.config, "_name_or_path", "")
            self._head = DraftHead.load(state.adapter, folder).to(next(model.parameters()).device,
                                                                  next(model.parameters()).dtype).eval()
        if self.config.method == "draft_model":
            self._drafter = state.drafter if state.drafter is not None else self._load_drafter(model)
            self._check_family(model, state)
            self._keep_call_media(model)
        self._media_token_ids = state.adapter.media_token_ids()
        self._saved_lookup = model.generation_config.prompt_lookup_num_tokens
        model.generation_config.prompt_lookup_num_tokens = self.config.num_tokens
        original = type(model)._get_candidate_generator

        def candidate_generator(generation_config: Any, input_ids: Any, inputs_tensor: Any, logits_processor: Any,
                                model_kwargs: dict, assistant_model: Any = None, **kwargs: Any) -> Any:
            if assistant_model is not None:
                return original(model, generation_config, input_ids, inputs_tensor, logits_processor, model_kwargs,
                                assistant_model, **kwargs)
            if self._drafter is not None:
                return DraftModelCandidates(
                    self._drafter, self._call_media, model_kwargs.get("attention_mask"),
                    model.config.get_text_config().vocab_size, self._media_token_ids,
                    generation_config.prompt_lookup_num_tokens or self.config.num_tokens,
                    generation_config._eos_token_tensor, generation_config.max_length, self.stats)
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

    def _keep_call_media(self, model: nn.Module) -> None:
        """Wrap ``generate`` to keep each call's media inputs for the drafter: ``generate`` encodes the media with
        the model's own encoders and drops the raw inputs before the drafter is made."""
        original = model.generate

        @functools.wraps(original)
        def generate(*args: Any, **kwargs: Any) -> Any:
            self._call_media = media_inputs(kwargs)
            try:
                return original(*args, **kwargs)
            finally:
                self._call_media = {}

        model.generate = generate

    def _load_drafter(self, model: nn.Module) -> Any:
        from ..models import load_model

        parameter = next(model.parameters())
        name = self.config.drafter or default_drafter(model)
        key = (name, str(parameter.device), parameter.dtype)
        if key not in _LOADED_DRAFTERS:  # reconfiguring (a benchmark does, per sample) must not reload it
            _LOADED_DRAFTERS.clear()
            _LOADED_DRAFTERS[key] = load_model(name, device=parameter.device, dtype=parameter.dtype)[0]
        return _LOADED_DRAFTERS[key]

    def _check_family(self, model: nn.Module, state: Any) -> None:
        from ..patch import get_adapter

        ours, theirs = type(state.adapter), type(get_adapter(self._drafter))
        if ours is not theirs:
            raise ConfigError(f"the drafter is a {type(self._drafter).__name__} ({theirs.__name__}) and the model a "
                              f"{type(model).__name__} ({ours.__name__}); a drafter must be of the model's family")

    def remove(self, model: nn.Module, state: Any) -> None:
        """Give ``generate`` its own decoding back."""
        model.__dict__.pop("_get_candidate_generator", None)
        model.generation_config.prompt_lookup_num_tokens = self._saved_lookup
        if self._drafter is not None:
            model.__dict__.pop("generate", None)
        self._drafter = None
        self._head = None

    def acceptance(self) -> dict[str, Any]:
        """Mean accepted length and acceptance rates since the last :meth:`reset_stats`."""
        return self.stats.summary()

    def reset_stats(self) -> None:
        """Start counting afresh."""
        self.stats.reset()
