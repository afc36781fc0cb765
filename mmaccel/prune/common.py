"""What the prune components share: routing attention through mmaccel's function, and reading each prefill's
visual tokens and padding from the inputs ``generate`` passes to the model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..attention import ATTENTION_NAME, register_attention
from ..kernels.attention_reference import normalize_mask


@dataclass
class PrefillInputs:
    """The prompt being prefilled, as the prune components need it."""

    visual: torch.Tensor  # (B, L) visual tokens (padding excluded)
    real: torch.Tensor  # (B, L) non-padding tokens
    recent: int  # trailing positions that probe


def read_prefill_inputs(adapter: Any, args: tuple, kwargs: dict, recent_probes: int) -> PrefillInputs | None:
    """The prefill's :class:`PrefillInputs` from a model forward's arguments; ``None`` for a decode step, for a
    chunk read against a cache that already holds tokens (a speculative verification, a question after prefilled
    media) or a call without ``input_ids``. Visual tokens come from the token ids (``adapter.visual_token_mask``),
    which generate passes even when it has already encoded the media."""
    input_ids = kwargs.get("input_ids", args[0] if args else None)
    if input_ids is None or input_ids.shape[1] <= 1:
        return None
    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    if cache is not None and hasattr(cache, "get_seq_length") and cache.get_seq_length() > 0:
        return None
    attention_mask = kwargs.get("attention_mask")
    real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    visual = adapter.visual_token_mask(input_ids) & real
    return PrefillInputs(visual=visual, real=real, recent=recent_probes or tail_after_last_visual(visual))


def tail_after_last_visual(visual: torch.Tensor) -> int:
    """The most positions after the last visual token in any row (at least 1): the instruction the probes read."""
    seq_len = visual.shape[1]
    positions = torch.arange(seq_len, device=visual.device).expand_as(visual)
    last = torch.where(visual, positions, -1).amax(-1)  # -1 for rows without visual tokens
    return max(1, int((seq_len - 1 - last).max()))


def route_attention(model: nn.Module, adapter: Any) -> str | None:
    """Switch the language model to mmaccel's attention function (registered if needed); returns the
    implementation to give back on removal, or ``None`` when it was already switched (by the kernels component)."""
    register_attention()
    current = adapter.text_config._attn_implementation
    if current == ATTENTION_NAME:
        return None
    model.set_attn_implementation({adapter.text_config_key: ATTENTION_NAME})
    return current


def unroute_attention(model: nn.Module, adapter: Any, original: str | None) -> None:
    """Undo :func:`route_attention`."""
    if original is not None:
        model.set_attn_implementation({adapter.text_config_key: original})


def allowed_keys(attention_mask: Any, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """The boolean ``(B, 1, Lq, Lk)`` "may attend" mask of an attention call: the given mask, or bottom-right
    aligned causality when there is none (the queries being the last ``Lq`` positions)."""
    q_len, kv_len = query.shape[2], key.shape[2]
    allowed = normalize_mask(attention_mask, kv_len)
    if allowed is None:
        rows = torch.arange(q_len, device=query.device)[:, None] + (kv_len - q_len)
        allowed = (torch.arange(kv_len, device=query.device)[None, :] <= rows)[None, None]
    return allowed.expand(query.shape[0], 1, q_len, kv_len)


def probe_scores(query: torch.Tensor, key: torch.Tensor, attention_mask: Any, inputs: PrefillInputs,
                 random_probes: float, seed: int, scaling: float | None) -> torch.Tensor:
    """Normalized importance ``(B, Hkv, L)`` of every key at a prefill attention call (see :mod:`.scoring`)."""
    from .scoring import normalized_scores, probe_positions

    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    probes = probe_positions(query.shape[2], inputs.recent, random_probes, seed, query.device)
    return normalized_scores(query, key, allowed_keys(attention_mask, query, key), probes, scale)


def keep_to_index(keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ascending kept positions ``(..., max kept)`` (rows keeping fewer are padded with the last position) and
    their counts ``(...)``, from a ``(..., L)`` boolean keep mask."""
    seq_len = keep.shape[-1]
    positions = torch.arange(seq_len, device=keep.device).expand_as(keep)
    ordered = torch.sort(torch.where(keep, positions, seq_len), dim=-1).values
    count = keep.sum(-1)
    width = max(1, int(count.max()))
    return ordered[..., :width].clamp(max=seq_len - 1), count


def is_prefill_of(inputs: PrefillInputs | None, query: torch.Tensor, key: torch.Tensor) -> bool:
    """Whether an attention call is the prefill of the prompt ``inputs`` describes (not decode, not a chunk)."""
    seq_len = query.shape[2]
    return inputs is not None and seq_len > 1 and key.shape[2] == seq_len and inputs.visual.shape[1] == seq_len
