"""Lossless speculative decoding: drafters for transformers' assisted decoding (:mod:`.component`)."""

from .component import SpeculativeDecoding
from .prompt_lookup import PromptLookupCandidates
from .stats import AcceptanceStats

__all__ = ["AcceptanceStats", "PromptLookupCandidates", "SpeculativeDecoding"]
