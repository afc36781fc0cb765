"""AvisC's contrast branch: the blind visual tokens alone.

Blind tokens are the few visual tokens that take a disproportionate share of the prompt's attention while holding
little of what the question needs (Woo et al., AvisC). They are found once per prompt, from the attention of the
prompt's last token during ``generate``'s own prefill (no extra forward, no eager attention):

1. per decoder layer, the head-mean attention ``a_l`` of the last query over the prompt, and its mass on the
   visual tokens;
2. the layers that hold most of that mass: sorted by mass, the first ``k`` with ``k = #(cumulative share <
   layer_share) + 1``;
3. ``a`` = the mean of ``a_l`` over those layers; blind = visual tokens with ``a >= mean + lambda * std`` (over the
   row's visual tokens).

The contrast branch reads the same prompt with every other visual token's embedding (the projector's output, as
the language model receives it) set to zero, so its logits say what the model answers from the blind tokens alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ..attention import OBSERVER_ATTR
from ..prune.common import allowed_keys


def last_query_attention(query: torch.Tensor, key: torch.Tensor, attention_mask: Any,
                         scaling: float | None) -> torch.Tensor:
    """``(B, Lk)``: the last query's attention probabilities over the keys, averaged over heads (GQA keys are
    shared by their query group)."""
    batch, q_heads, _, head_dim = query.shape
    kv_heads = key.shape[1]
    # queries grouped by the key head they share: no repeated copy of the keys
    last = query[:, :, -1].float().view(batch, kv_heads, q_heads // kv_heads, head_dim)
    scale = scaling if scaling is not None else head_dim ** -0.5
    scores = (last @ key.float().transpose(-1, -2)) * scale  # (B, Hkv, groups, Lk)
    allowed = allowed_keys(attention_mask, query, key)[:, :, -1:]  # (B, 1, 1, Lk)
    scores = scores.masked_fill(~allowed, float("-inf"))
    return scores.softmax(-1).mean(dim=(1, 2))


def blind_token_mask(layer_attention: list[torch.Tensor], visual: torch.Tensor, layer_share: float = 0.5,
                     lam: float = 1.0) -> torch.Tensor:
    """Boolean ``(B, L)``: the blind visual tokens (module docstring) from each layer's last-query attention
    ``(B, L)`` and the visual-token mask ``(B, L)``. A row without visual tokens has none."""
    attention = torch.stack(layer_attention, dim=1).float()  # (B, layers, L)
    visual_f = visual[:, None].float()
    mass = (attention * visual_f).sum(-1)  # (B, layers)
    share = mass / mass.sum(-1, keepdim=True).clamp_min(1e-12)
    order = share.argsort(dim=-1, descending=True)
    cumulative = share.gather(1, order).cumsum(-1)
    keep = (cumulative < layer_share).sum(-1, keepdim=True) + 1  # (B, 1)
    ranks = torch.arange(share.shape[1], device=share.device)
    chosen = torch.zeros_like(share).scatter(1, order, (ranks < keep).float())
    a = (attention * chosen[..., None]).sum(1) / chosen.sum(1, keepdim=True)  # (B, L)
    count = visual.sum(-1, keepdim=True).clamp_min(1)
    mean = (a * visual).sum(-1, keepdim=True) / count
    std = (((a - mean) ** 2) * visual).sum(-1, keepdim=True).div(count).sqrt()
    return visual & (a >= mean + lam * std)


class BlindTokenSearch:
    """Records the last query's attention in every decoder layer while armed (:meth:`arm`), through the attention
    modules' observer slot (the language model must run mmaccel's attention function), then gives the blind-token
    mask of that prefill."""

    def __init__(self, attention_modules: list[nn.Module]):
        self.modules = attention_modules
        self.recorded: list[torch.Tensor] = []
        self.armed = False
        for module in attention_modules:
            setattr(module, OBSERVER_ATTR, self._observe)

    def remove(self) -> None:
        """Take the observers off the attention modules."""
        for module in self.modules:
            module.__dict__.pop(OBSERVER_ATTR, None)

    def arm(self) -> None:
        """Record the next forward's layers (the coming prefill)."""
        self.recorded, self.armed = [], True

    def _observe(self, query: torch.Tensor, key: torch.Tensor, attention_mask: Any, scaling: float | None) -> None:
        if self.armed and len(self.recorded) < len(self.modules):
            self.recorded.append(last_query_attention(query, key, attention_mask, scaling))

    def blind_tokens(self, visual: torch.Tensor, layer_share: float, lam: float) -> torch.Tensor:
        """The blind-token mask of the recorded prefill (see :func:`blind_token_mask`); disarms."""
        self.armed = False
        if len(self.recorded) != len(self.modules):
            raise RuntimeError(f"AvisC saw {len(self.recorded)} of {len(self.modules)} attention layers at prefill; "
                               "the language model must run mmaccel's attention function")
        length = visual.shape[1]
        return blind_token_mask([a[:, -length:] for a in self.recorded], visual, layer_share, lam)


@contextlib.contextmanager
def only_tokens_kept(language_model: nn.Module, keep: torch.Tensor) -> Iterator[None]:
    """While open, a prefill of the language model (``inputs_embeds`` at least as long as ``keep`` ``(B, L)``: the
    prompt, and maybe tokens generated since) sees zeros in place of the prompt's embeddings where ``keep`` is
    false."""
    def zero_the_rest(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        embeds = kwargs.get("inputs_embeds")
        if embeds is None or embeds.shape[1] < keep.shape[1]:
            return None
        rest = keep.new_ones((keep.shape[0], embeds.shape[1] - keep.shape[1]))
        factor = torch.cat([keep, rest], dim=1).to(embeds.device, embeds.dtype)
        return args, {**kwargs, "inputs_embeds": embeds * factor[..., None]}

    handle = language_model.register_forward_pre_hook(zero_the_rest, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()
