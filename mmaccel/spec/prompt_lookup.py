"""Prompt-lookup drafting (training-free): the continuation of the latest earlier occurrence of the sequence's last
n-gram, searched in the prompt's text and the text generated so far.

Unlike transformers' ``PromptLookupCandidateGenerator`` it never proposes image, video or audio placeholder tokens
(their positions are left out of the search, so a match never runs into them), takes the *most recent* occurrence
of the longest n-gram that has one (generated text tends to repeat what it said last), and counts what it drafted
and what was accepted (:class:`~mmaccel.spec.stats.AcceptanceStats`).
"""

from __future__ import annotations

import torch

from .candidates import DraftCandidates
from .stats import AcceptanceStats


class PromptLookupCandidates(DraftCandidates):
    """Drafts up to ``num_tokens`` tokens by n-gram lookup, for transformers' assisted decoding (batch 1)."""

    def __init__(self, num_tokens: int, max_ngram: int, min_ngram: int, media_token_ids: set[int],
                 eos_token_ids: torch.Tensor | None, max_length: int, stats: AcceptanceStats):
        self.num_tokens, self.max_ngram, self.min_ngram = num_tokens, max_ngram, min_ngram
        self.media_token_ids = torch.tensor(sorted(media_token_ids), dtype=torch.long)
        self.eos_token_ids = eos_token_ids
        self.max_length = max_length
        self.stats = stats
        self._drafted = 0

    def get_candidates(self, input_ids: torch.LongTensor, **kwargs) -> tuple[torch.LongTensor, None]:
        """``input_ids`` followed by the draft (possibly empty), and no draft logits (the draft is deterministic)."""
        room = self.max_length - input_ids.shape[1] - 1  # the target adds one token of its own
        draft = self.draft(input_ids[0], min(self.num_tokens, room)) if room > 0 else input_ids.new_empty(0)
        self._drafted = int(draft.numel())
        return torch.cat([input_ids, draft[None].to(input_ids.device)], dim=1), None

    def draft(self, sequence: torch.Tensor, limit: int) -> torch.Tensor:
        """Up to ``limit`` tokens continuing the latest earlier match of the last n-gram of ``sequence``."""
        length = sequence.shape[0]
        media = torch.isin(sequence, self.media_token_ids.to(sequence.device))
        for size in range(min(self.max_ngram, length - 1), self.min_ngram - 1, -1):
            tail = sequence[-size:]
            if media[-size:].any():
                continue
            windows = sequence[:-1].unfold(0, size, 1)  # every earlier n-gram (starts 0 .. length - 1 - size)
            matches = (windows == tail).all(dim=1)
            for start in matches.nonzero()[:, 0].flip(0).tolist():
                if media[start:start + size].any():
                    continue
                continuation = sequence[start + size:start + size + limit]
                cut = media[start + size:start + size + limit].nonzero()
                if cut.numel():
                    continuation = continuation[:int(cut[0])]
                if self.eos_token_ids is not None and continuation.numel():
                    eos = torch.isin(continuation, self.eos_token_ids.to(continuation.device)).nonzero()
                    if eos.numel():
                        continuation = continuation[:int(eos[0]) + 1]
                if continuation.numel():
                    return continuation
        return sequence.new_empty(0)
