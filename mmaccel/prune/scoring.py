"""Token importance from probe queries, and ZipVL's keep-ratio rule.

Scoring every query against every key would need the full attention matrix, which flash attention never builds.
ZipVL (after ZipCache) scores keys with a few *probe* queries instead: the prompt's last tokens (the instruction
after the image or video) and a random sample of earlier positions. A key's importance is its attention summed over
the probes (and over the query heads that share its key/value head), divided by the number of probes that can see
it — the *normalized* score, which removes the bias towards early tokens that every later query sees. (ZipCache's
code divides by the number of all later positions instead of later probes, which over-weights late tokens; here
the count comes from the mask itself.)

The keep ratio is chosen per layer and per (batch row, key/value head): the smallest set of candidate tokens whose
normalized scores reach a fraction ``tau`` of the candidates' total (ZipVL Eq. 6, as a mass fraction).
"""

from __future__ import annotations

import math

import torch


def probe_positions(seq_len: int, recent: int, random_fraction: float, seed: int, device: torch.device
                    ) -> torch.Tensor:
    """Ascending probe positions: the last ``recent`` positions and ``random_fraction`` of the earlier ones, drawn
    without replacement from a generator seeded with ``seed`` (the same prompt gives the same probes)."""
    recent = max(1, min(recent, seq_len))
    earlier = seq_len - recent
    count = min(earlier, math.ceil(random_fraction * earlier))
    generator = torch.Generator().manual_seed(seed)
    sampled = torch.randperm(earlier, generator=generator)[:count]
    positions = torch.cat([sampled, torch.arange(earlier, seq_len)])
    return torch.sort(positions).values.to(device)


def probe_attention(query: torch.Tensor, key: torch.Tensor, allowed: torch.Tensor, probes: torch.Tensor,
                    scale: float, per_probe: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The attention the probe queries pay each key, summed over probes and over the query heads of each
    key/value head, ``(B, Hkv, Lk)``, and how many probes can see each key, ``(B, Lk)``. With ``per_probe`` the
    probes are not summed: ``(B, Hkv, P, Lk)`` and ``(B, P, Lk)``.

    ``query`` ``(B, Hq, Lq, D)`` and ``key`` ``(B, Hkv, Lk, D)`` (grouped-query), ``allowed`` the boolean
    ``(B, 1, Lq, Lk)`` attention mask (causality and padding), ``probes`` the query positions that score.
    """
    batch, q_heads, _, head_dim = query.shape
    kv_heads = key.shape[1]
    group = q_heads // kv_heads
    probe_queries = query[:, :, probes].float().view(batch, kv_heads, group, len(probes), head_dim)
    logits = torch.einsum("bhgpd,bhkd->bhgpk", probe_queries, key.float()) * scale
    visible = allowed[:, 0, probes]  # (B, P, Lk)
    logits = logits.masked_fill(~visible[:, None, None], float("-inf"))
    weights = torch.nan_to_num(torch.softmax(logits, dim=-1), nan=0.0)  # a probe that sees nothing: zeros
    if per_probe:
        return weights.sum(dim=2), visible
    return weights.sum(dim=(2, 3)), visible.sum(dim=1)


def normalized_scores(query: torch.Tensor, key: torch.Tensor, allowed: torch.Tensor, probes: torch.Tensor,
                      scale: float) -> torch.Tensor:
    """``(B, Hkv, Lk)`` normalized importance of every key: its :func:`probe_attention` divided by the number of
    probes that can see it (and averaged over the query heads of a group). Keys no probe can see score 0."""
    summed, seen_by = probe_attention(query, key, allowed, probes, scale)
    return summed / seen_by.clamp(min=1)[:, None, :] / (query.shape[1] // key.shape[1])


def keep_by_mass(scores: torch.Tensor, candidates: torch.Tensor, tau: float) -> torch.Tensor:
    """``(B, Hkv, Lk)`` boolean: the smallest set of candidates (``(B, Lk)`` boolean) per (row, head) whose scores
    reach ``tau`` of the candidates' total score. ``tau >= 1`` keeps every candidate."""
    keep = candidates[:, None, :].expand_as(scores).clone()
    if tau >= 1.0:
        return keep
    masked = scores.masked_fill(~keep, 0.0)
    ordered, order = torch.sort(masked, dim=-1, descending=True)
    total = ordered.sum(dim=-1, keepdim=True)
    cumulative = ordered.cumsum(dim=-1) / total.clamp(min=torch.finfo(ordered.dtype).tiny)
    needed = (torch.searchsorted(cumulative.contiguous(), torch.full_like(total, tau)) + 1)  # (B, Hkv, 1)
    needed = torch.minimum(needed, candidates.sum(-1)[:, None, None])
    rank = torch.arange(scores.shape[-1], device=scores.device)
    chosen = torch.zeros_like(keep)
    chosen.scatter_(-1, order, rank < needed)
    return chosen & keep
