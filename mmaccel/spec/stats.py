"""Acceptance statistics of speculative decoding: per verification step, how many tokens were drafted and how many
the target accepted."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def mean_accepted_length(accepted: int, steps: int) -> float | None:
    """Tokens per target forward over ``steps`` verification steps that accepted ``accepted`` draft tokens in all:
    each step adds its accepted drafts plus the target's own token."""
    return (accepted + steps) / steps if steps else None


@dataclass
class AcceptanceStats:
    """Counts over the verification steps since the last :meth:`reset`."""

    steps: int = 0
    drafted: int = 0
    accepted: int = 0
    drafted_at: list[int] = field(default_factory=list)  # [i]: steps whose draft had a token at position i
    accepted_at: list[int] = field(default_factory=list)  # [i]: steps whose token at position i was accepted

    def record(self, drafted: int, accepted: int) -> None:
        """One verification step: ``drafted`` tokens proposed, the first ``accepted`` of them accepted."""
        self.steps += 1
        self.drafted += drafted
        self.accepted += accepted
        for counts, upto in ((self.drafted_at, drafted), (self.accepted_at, accepted)):
            counts.extend([0] * (upto - len(counts)))
            for position in range(upto):
                counts[position] += 1

    def reset(self) -> None:
        """Forget every step."""
        self.steps = self.drafted = self.accepted = 0
        self.drafted_at, self.accepted_at = [], []

    def summary(self) -> dict[str, Any]:
        """Steps, drafted and accepted tokens, the mean accepted length (:func:`mean_accepted_length`), the
        acceptance rate overall and per draft position, and the counts behind the latter (steps whose draft reached
        each position, and whose token there was accepted)."""
        return {
            "steps": self.steps,
            "drafted": self.drafted,
            "accepted": self.accepted,
            "mean_accepted_length": mean_accepted_length(self.accepted, self.steps),
            "acceptance_rate": self.accepted / self.drafted if self.drafted else None,
            "acceptance_by_position": [
                (self.accepted_at[i] if i < len(self.accepted_at) else 0) / drafted
                for i, drafted in enumerate(self.drafted_at)],
            "drafted_at": list(self.drafted_at),
            "accepted_at": list(self.accepted_at),
        }


def merged_acceptance(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Several :meth:`AcceptanceStats.summary` results as one: the mean accepted length, the acceptance rate and
    the rate per draft position over all their steps."""
    merged = AcceptanceStats()
    for part in summaries:
        merged.steps += part["steps"]
        merged.drafted += part["drafted"]
        merged.accepted += part["accepted"]
        for total, counts in ((merged.drafted_at, part["drafted_at"]), (merged.accepted_at, part["accepted_at"])):
            total.extend([0] * (len(counts) - len(total)))
            for position, count in enumerate(counts):
                total[position] += count
    return merged.summary()
