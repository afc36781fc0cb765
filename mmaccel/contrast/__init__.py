"""Contrastive decoding against hallucination: contrast branches (:mod:`.branches`), the combiner
(:mod:`.decoding`) and the ``contrast`` component (:mod:`.component`)."""

from .component import ContrastiveDecoding
from .decoding import ContrastiveLogitsProcessor, ContrastStats

__all__ = ["ContrastStats", "ContrastiveDecoding", "ContrastiveLogitsProcessor"]
