"""A transformers cache layer that keeps salient tokens at high bits and the rest at low bits (ZipCache / ZipVL).

Layout of one :class:`MixedPrecisionLayer`:

- **packed segments**: tokens leave the full-precision window ``block`` at a time (never one by one: each block
  has its own statistics). In a block, per batch row and key/value head, the ``salient_ratio`` share of tokens with
  the highest normalized attention score is quantized at ``high_bits``, the rest at ``low_bits``: keys per channel,
  values channel-separable token-wise (:mod:`mmaccel.kv.quant`). Each bit width has one
  :class:`~mmaccel.kernels.quantized_attention_reference.QuantizedSegment`, to which every block appends its share;
  each token's sequence position is kept, so padding masks still apply.
- **full-precision window**: the most recent tokens, at least ``window`` of them. Speculative decoding's rollback
  (:meth:`crop`) only ever removes tokens from here; a crop that would reach packed blocks raises.

Saliency: the attention function reports, for each forward, the normalized attention of its probe queries (at
prefill) or of the new query (at decode) over the window's tokens (:meth:`observe`); a token's score is its
accumulated attention divided by the number of queries that could see it. A block is packed at the next
:meth:`update` after its tokens have been scored.

The layer stores; attention reads. :meth:`update` returns only the window's keys and values: the attention function
(:mod:`mmaccel.kv.component`) reads the packed segments with :func:`~mmaccel.kernels.quantized_attention` (a fused
Triton kernel on CUDA, dequantizing in registers; the PyTorch reference elsewhere), so no dequantized copy of the
cache is kept. :meth:`dequantized` gives the whole cache in sequence order, for inspection and tests.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer

from ..kernels.quantized_attention_reference import QuantizedSegment, dequantize_segment
from .quant import quantize_keys, quantize_values


def quantize_block(keys: torch.Tensor, values: torch.Tensor, scores: torch.Tensor, start: int, high_bits: int,
                   low_bits: int, salient_ratio: float) -> list[QuantizedSegment]:
    """One block of ``T`` tokens (``(B, H, T, D)``, sequence positions ``start ..``) as two segments of one block
    each: per (batch row, head), the ``salient_ratio`` share of tokens with the highest ``scores`` at ``high_bits``,
    the rest at ``low_bits``. A segment that would hold no token is left out."""
    tokens = keys.shape[-2]
    salient = min(tokens, max(0, round(salient_ratio * tokens)))
    order = torch.argsort(scores, dim=-1, descending=True)  # (B, H, T)
    segments = []
    for chosen, bits in ((order[..., :salient], high_bits), (order[..., salient:], low_bits)):
        if chosen.shape[-1] == 0:
            continue
        index = chosen[..., None].expand(*chosen.shape, keys.shape[-1])
        k, v = quantize_keys(keys.gather(-2, index), bits), quantize_values(values.gather(-2, index), bits)
        segments.append(QuantizedSegment(
            bits=bits, per_block=chosen.shape[-1], key_codes=k.codes, key_low=k.low, key_step=k.step,
            value_codes=v.codes, value_channel=v.channel, value_low=v.low[..., 0], value_step=v.step[..., 0],
            positions=(chosen + start).to(torch.int32)))
    return segments


def append_segment(segment: QuantizedSegment, block: QuantizedSegment) -> QuantizedSegment:
    """``segment`` followed by ``block`` (same bits and tokens per block)."""
    joined = [torch.cat([old, new], dim=2) for old, new in zip(segment.tensors(), block.tensors(), strict=True)]
    return QuantizedSegment(segment.bits, segment.per_block, *joined)


class MixedPrecisionLayer(DynamicLayer):
    """A croppable cache layer with packed mixed-precision segments and a full-precision window (module
    docstring). ``keys`` / ``values`` hold the window."""

    def __init__(self, high_bits: int = 4, low_bits: int = 2, salient_ratio: float = 0.6, window: int = 16,
                 block: int = 32):
        super().__init__()
        self.high_bits, self.low_bits, self.salient_ratio = high_bits, low_bits, salient_ratio
        self.window, self.block = window, block
        self.segments: list[QuantizedSegment] = []
        self.packed_tokens = 0
        self.score_sum: torch.Tensor | None = None  # (B, H, W) accumulated attention of the window's tokens
        self.score_count: torch.Tensor | None = None  # (B, W) queries that could see each window token
        self._last_appended = 0  # tokens the last update appended
        self._last_queries: tuple[torch.Tensor, ...] | None = None  # scores before the last forward, its queries'

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pack the window's oldest scored blocks, append the new tokens, return the window's keys and values (the
        packed tokens are in :attr:`segments`)."""
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
        self._last_appended, self._last_queries = new, None
        return self.keys, self.values

    def observe(self, attention: torch.Tensor, visible: torch.Tensor) -> None:
        """Add the attention ``(B, H, Q, W)`` that each of this forward's ``Q`` scoring queries paid to the window's
        tokens (summed over the query heads of each key/value head), and whether it could see each one
        ``(B, Q, W)``.

        When the scoring queries are exactly the tokens the last :meth:`update` appended, in order (decode, and
        speculative verification), their contributions are kept until the next update, so that :meth:`crop` can
        take back those of removed tokens: a crop of drafted tokens then leaves the scores, and so every later
        packing decision, as if they had never been drafted."""
        undo = (self.score_sum, self.score_count, attention, visible)
        self._last_queries = undo if attention.shape[2] == self._last_appended else None
        self.score_sum = self.score_sum + attention.float().sum(dim=2)
        self.score_count = self.score_count + visible.float().sum(dim=1)

    def dequantized(self, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Every token's keys and values ``(B, H, L, D)`` in sequence order: the packed ones dequantized."""
        dtype = dtype or self.keys.dtype
        batch, heads, _, dim = self.keys.shape
        keys = self.keys.new_zeros((batch, heads, self.packed_tokens, dim), dtype=dtype)
        values = torch.zeros_like(keys)
        for segment in self.segments:
            k, v = dequantize_segment(segment, dtype)
            index = segment.positions.long()[..., None].expand_as(k)
            keys.scatter_(2, index, k)
            values.scatter_(2, index, v)
        return torch.cat([keys, self.keys.to(dtype)], dim=2), torch.cat([values, self.values.to(dtype)], dim=2)

    def _pack_scored_blocks(self) -> None:
        while self.keys is not None and self.keys.dim() == 4 and self.keys.shape[-2] - self.block >= self.window:
            scores = self.score_sum[..., :self.block] / self.score_count[:, None, :self.block].clamp(min=1)
            packed = quantize_block(self.keys[..., :self.block, :], self.values[..., :self.block, :], scores,
                                    self.packed_tokens, self.high_bits, self.low_bits, self.salient_ratio)
            self.segments = packed if not self.segments else [
                append_segment(old, new) for old, new in zip(self.segments, packed, strict=True)]
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
        kept = self.keys.shape[-2]
        if self._last_queries is not None and remove <= self._last_appended:
            # the removed tokens were the last forward's queries: take back their contributions to the scores
            before_sum, before_count, attention, visible = self._last_queries
            stay = self._last_appended - remove
            self.score_sum = before_sum[..., :kept] + attention[:, :, :stay, :kept].float().sum(dim=2)
            self.score_count = before_count[:, :kept] + visible[:, :stay, :kept].float().sum(dim=1)
        else:
            self.score_sum, self.score_count = self.score_sum[..., :kept], self.score_count[:, :kept]
        self._last_appended, self._last_queries = 0, None

    def reset(self) -> None:
        """Drop everything."""
        self.segments, self.packed_tokens = [], 0
        self.score_sum = self.score_count = self._last_queries = None
        self._last_appended = 0
        super().reset()

    def nbytes(self) -> int:
        """Bytes held by the packed segments and the window."""
        tensors = [t for segment in self.segments for t in segment.tensors()]
        if self.keys is not None:
            tensors += [self.keys, self.values]
        return sum(t.numel() * t.element_size() for t in tensors)

    def batch_repeat_interleave(self, repeats: int) -> None:  # noqa: D102 - not supported
        raise NotImplementedError("the mixed-precision cache does not support beam search or num_return_sequences")

    def batch_select_indices(self, indices: torch.Tensor) -> None:  # noqa: D102 - not supported
        raise NotImplementedError("the mixed-precision cache does not support selecting batch rows")
