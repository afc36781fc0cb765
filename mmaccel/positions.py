"""Position ids for a forward that continues a cached prefix outside ``generate`` (a contrast branch, a drafter).

``generate`` hands the model the text positions of the new tokens (left padding skipped); an M-RoPE model (Qwen2-VL
and its kin, which keep a ``rope_deltas`` offset as module state) gets those plus its offset. At the prefill an
M-RoPE model must get none: it computes its 3-D positions from the media grid itself, and given positions it would
use them as they are.
"""

from __future__ import annotations

import torch
from torch import nn


def rope_offset_holders(model: nn.Module) -> list[nn.Module]:
    """The modules of ``model`` that keep an M-RoPE offset (``rope_deltas``); none for a 1-D RoPE model."""
    return [module for module in model.modules() if hasattr(module, "rope_deltas")]


def continuation_position_ids(attention_mask: torch.Tensor, count: int, mrope: bool,
                              offset: torch.Tensor | None) -> torch.Tensor | None:
    """The position ids ``generate`` would pass for the last ``count`` tokens of ``attention_mask`` (``(B, L)``,
    every token so far): text positions for a 1-D RoPE model; for an M-RoPE one (``mrope``: it has
    :func:`rope_offset_holders`), text positions plus ``offset`` (its ``rope_deltas`` after its prefill), or
    ``None`` before its prefill (``offset`` is ``None``)."""
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -count:]
    if not mrope:
        return positions
    return None if offset is None else positions[None] + offset.to(positions.device)
