"""What mmaccel's draft generators (transformers candidate generators) share: how many tokens they draft per step,
and the acceptance bookkeeping after each verification."""

from __future__ import annotations

import torch
from transformers.generation.candidate_generator import CandidateGenerator


class DraftCandidates(CandidateGenerator):
    """Base of the draft generators. Subclasses set ``num_tokens`` (the most tokens drafted per step), ``stats`` (an
    :class:`~mmaccel.spec.stats.AcceptanceStats`) and ``_drafted`` (the length of the last draft)."""

    num_tokens: int

    @property
    def num_drafting_tokens(self) -> int:
        """The most tokens drafted per step (transformers 5.25 on asks, to size what a cache keeps for rollback)."""
        return self.num_tokens

    def update_candidate_strategy(self, input_ids: torch.LongTensor, scores: torch.Tensor, num_matches: int) -> None:
        """Record how many of the last draft's tokens the target accepted."""
        self.stats.record(self._drafted, int(num_matches))
