"""A transformers cache layer that keeps salient tokens at high bits and the rest at low bits (ZipCache / ZipVL).

Layout of one :class:`MixedPrecisionLayer`:

- **packed blocks**: tokens leave the full-precision window ``block`` at a time (never one by one: each block has
  its own statistics). In a block, per batch row and key/value head, the ``salient_ratio`` share of tokens with the
  highest normalized attention score is quantized at ``high_bits``, the rest at ``low_bits``: keys per channel,
  values channel-separable token-wise (:mod:`mmaccel.kv.quant`). Each token's slot in the block is kept (a small
  index), so dequantized blocks come back in sequence order and masks still line up.
- **full-precision window**: the most recent tokens, at least ``window`` of them. Speculative decoding's rollback
  (:meth:`crop`) only ever removes tokens from here; a crop that would reach packed blocks raises.

Saliency: the attention function reports, for each forward, the normalized attention of its probe queries (at
prefill) or of the new query (at decode) over the window's tokens (:meth:`observe`); a token's score is its
accumulated attention divided by the number of queries that could see it. A block is packed at the next
:meth:`update` after its tokens have been scored.

This is the PyTorch path: :meth:`update` returns dequantized keys and values (a transient copy, freed after the
layer's attention), so any attention implementation can read them.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer

from .quant import (
    QuantizedKeys,
    QuantizedValues,
    dequantize_keys,
    dequantize_values,
    quantize_keys,
    quantize_values,
)


class PackedBlock:
    """One block of ``T`` tokens: a high-bit and a low-bit part, and each token's slot in the block."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, scores: torch.Tensor, high_bits: int,
                 low_bits: int, salient_ratio: float):
        tokens = keys.shape[-2]
        salient = min(tokens, max(0, round(salient_ratio * tokens)))
        order = torch.argsort(scores, dim=-1, descending=True)  # (B, H, T)
        self.slots = order.to(torch.int16)
        self.length = tokens
        self.salient = salient
        self.parts: list[tuple[QuantizedKeys, QuantizedValues] | None] = []
        for chosen, bits in ((order[..., :salient], high_bits), (order[..., salient:], low_bits)):
            if chosen.shape[-1] == 0:
                self.parts.append(None)
                continue
            index = chosen[..., None].expand(*chosen.shape, keys.shape[-1])
            self.parts.append((quantize_keys(keys.gather(-2, index), bits),
                               quantize_values(values.gather(-2, index), bits)))

    def dequantize(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values ``(B, H, T, D)`` in sequence order."""
        pieces_k, pieces_v = [], []
        for part in self.parts:
            if part is not None:
                pieces_k.append(dequantize_keys(part[0], dtype))
                pieces_v.append(dequantize_values(part[1], dtype))
        keys_sorted, values_sorted = torch.cat(pieces_k, dim=-2), torch.cat(pieces_v, dim=-2)
        index = self.slots.long()[..., None].expand_as(keys_sorted)
        return (torch.empty_like(keys_sorted).scatter_(-2, index, keys_sorted),
                torch.empty_like(values_sorted).scatter_(-2, index, values_sorted))

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor the block holds (for byte counts)."""
        held = [self.slots]
        for part in self.parts:
            if part is not None:
                for quantized in part:
                    held += [t for t in vars(quantized).values() if isinstance(t, torch.Tensor)]
        return held


class MixedPrecisionLayer(DynamicLayer):
    """A croppable cache layer with packed mixed-precision blocks and a full-precision window (module docstring)."""

    def __init__(self, high_bits: int = 4, low_bits: int = 2, salient_ratio: float = 0.6, window: int = 128,
                 block: int = 64):
        super().__init__()
        self.high_bits, self.low_bits, self.salient_ratio = high_bits, low_bits, salient_ratio
        self.window, self.block = window, block
        self.blocks: list[PackedBlock] = []
        self.packed_tokens = 0
        self.score_sum: torch.Tensor | None = None  # (B, H, W) accumulated attention of the window's tokens
        self.score_count: torch.Tensor | None = None  # (B, W) queries that could see each window token

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pack the window's oldest scored blocks, append the new tokens, return every token's keys and values."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self._pack_scored_blocks()
        self.keys = torch.cat([self.keys, key_states], dim=-2)
        self.values = torch.cat([self.values, value_states], dim=-2)
        new = key_states.shape[-2]
        batch, heads = key_states.shape[:2]
        zeros = key_states.new_zeros((batch, heads, new), dtype=torch.float32)
        self.score_sum = zeros if self.score_sum is None else torch.cat([self.score_sum, zeros], dim=-1)
        counts = key_states.new_zeros((batch, new), dtype=torch.float32)
        self.score_count = counts if self.score_count is None else torch.cat([self.score_count, counts], dim=-1)
        if not self.blocks:
            return self.keys, self.values
        dequantized = [block.dequantize(self.keys.dtype) for block in self.blocks]
        return (torch.cat([k for k, _ in dequantized] + [self.keys], dim=-2),
                torch.cat([v for _, v in dequantized] + [self.values], dim=-2))

    def observe(self, attention: torch.Tensor, visible: torch.Tensor) -> None:
        """Add the attention ``(B, H, W)`` that this forward's scoring queries paid to the window's tokens (summed
        over queries and the query heads of each key/value head), and how many queries could see each one
        ``(B, W)``."""
        self.score_sum = self.score_sum + attention.float()
        self.score_count = self.score_count + visible.float()

    def _pack_scored_blocks(self) -> None:
        while self.keys is not None and self.keys.dim() == 4 and self.keys.shape[-2] - self.block >= self.window:
            scores = self.score_sum[..., :self.block] / self.score_count[:, None, :self.block].clamp(min=1)
            self.blocks.append(PackedBlock(self.keys[..., :self.block, :], self.values[..., :self.block, :], scores,
                                           self.high_bits, self.low_bits, self.salient_ratio))
            self.packed_tokens += self.block
            self.keys, self.values = self.keys[..., self.block:, :], self.values[..., self.block:, :]
            self.score_sum, self.score_count = self.score_sum[..., self.block:], self.score_count[:, self.block:]

    def get_seq_length(self) -> int:
        """Tokens held, packed and full precision."""
        if not self.is_initialized or self.keys is None or self.keys.dim() != 4:
            return self.packed_tokens
        return self.packed_tokens + self.keys.shape[-2]

    def crop(self, tokens_to_remove: int) -> None:
        """Remove the last ``-tokens_to_remove`` tokens (transformers' convention); they must all be in the
        full-precision window."""
        if tokens_to_remove > 0:
            raise ValueError(f"crop({tokens_to_remove}): pass a negative number of tokens to remove")
        remove = -tokens_to_remove
        if remove == 0 or not self.is_initialized:
            return
        if remove > self.keys.shape[-2]:
            raise ValueError(f"cannot crop {remove} tokens: only the {self.keys.shape[-2]} most recent are in full "
                             f"precision (raise the window above the longest draft)")
        self.keys, self.values = self.keys[..., :-remove, :], self.values[..., :-remove, :]
        self.score_sum, self.score_count = self.score_sum[..., :-remove], self.score_count[:, :-remove]

    def reset(self) -> None:
        """Drop everything."""
        self.blocks, self.packed_tokens = [], 0
        self.score_sum = self.score_count = None
        super().reset()

    def nbytes(self) -> int:
        """Bytes held by the packed blocks and the window."""
        tensors = [t for block in self.blocks for t in block.tensors()]
        if self.keys is not None:
            tensors += [self.keys, self.values]
        return sum(t.numel() * t.element_size() for t in tensors)

    def batch_repeat_interleave(self, repeats: int) -> None:  # noqa: D102 - not supported
        raise NotImplementedError("the mixed-precision cache does not support beam search or num_return_sequences")

    def batch_select_indices(self, indices: torch.Tensor) -> None:  # noqa: D102 - not supported
        raise NotImplementedError("the mixed-precision cache does not support selecting batch rows")
