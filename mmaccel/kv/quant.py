"""Low-bit quantization of KV-cache blocks, packed for real into uint8 (ZipCache's schemes).

- **Keys, per channel:** each channel of a block (per batch row and key/value head) gets an asymmetric min-max
  scale over the block's tokens: ``code = round((k - min) / step)``, ``step = (max - min) / (2**bits - 1)``. Keys
  have outlier channels, so per-channel statistics keep the error of the others small.
- **Values, channel-separable token-wise (CST):** every channel is first divided by ``c = sqrt(max_t |v|)`` (over
  the block's tokens), which evens out channel magnitudes; then each token gets its own min-max over its channels
  (one statistic per token and head — ZipCache's code shares one across all heads, which mixes different tokens'
  ranges); dequantization multiplies ``c`` back.
- **Packing:** ``8 // bits`` codes per byte, planar: the last dimension is split into ``8 // bits`` equal chunks and
  chunk ``i`` is shifted by ``i * bits``, so unpacking is shifts and masks on contiguous slices (what a decode kernel
  does in registers).

Statistics are kept in float16 (``stat_dtype``), so a block of ``T`` tokens and ``D`` channels costs
``T * D * bits / 8`` bytes of codes plus ``2 * D`` (keys) or ``D + 2 * T`` (values) statistics per head — never a
scale per single token and channel, which would make the "compressed" cache larger than float16.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: Bit widths that pack evenly into a byte.
BITS = (2, 4, 8)


def _check_bits(bits: int, dim: int) -> None:
    if bits not in BITS:
        raise ValueError(f"bits={bits} is not supported; allowed: {', '.join(map(str, BITS))}")
    if dim % (8 // bits):
        raise ValueError(f"the last dimension ({dim}) must be a multiple of {8 // bits} to pack {bits}-bit codes")


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integer codes in ``[0, 2**bits)`` along the last dimension into uint8 (planar layout)."""
    _check_bits(bits, codes.shape[-1])
    per_byte = 8 // bits
    chunks = codes.to(torch.uint8).chunk(per_byte, dim=-1)
    packed = torch.zeros_like(chunks[0])
    for index, chunk in enumerate(chunks):
        packed |= chunk << (index * bits)
    return packed


def unpack(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """The uint8 codes :func:`pack` packed, last dimension restored."""
    _check_bits(bits, packed.shape[-1] * (8 // bits))
    mask = (1 << bits) - 1
    return torch.cat([(packed >> (index * bits)) & mask for index in range(8 // bits)], dim=-1)


def _minmax_codes(x: torch.Tensor, dim: int, bits: int, stat_dtype: torch.dtype
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Codes of ``x`` with min-max statistics taken over ``dim`` (kept), rounded to ``stat_dtype`` first so that
    dequantization sees exactly the statistics that produced the codes."""
    low = x.amin(dim=dim, keepdim=True).to(stat_dtype)
    high = x.amax(dim=dim, keepdim=True).to(stat_dtype)
    step = ((high.float() - low.float()) / (2**bits - 1)).to(stat_dtype)
    safe = torch.where(step.float() > 0, step.float(), torch.ones_like(step, dtype=torch.float32))
    codes = torch.round((x.float() - low.float()) / safe).clamp_(0, 2**bits - 1)
    return codes.to(torch.uint8), low, step


@dataclass
class QuantizedKeys:
    """A key block ``(..., T, D)`` quantized per channel: packed codes, per-channel ``low`` and ``step``."""

    codes: torch.Tensor  # (..., T, D * bits / 8) uint8
    low: torch.Tensor  # (..., 1, D)
    step: torch.Tensor  # (..., 1, D)
    bits: int

    def nbytes(self) -> int:
        """Bytes held (codes and statistics)."""
        return sum(t.numel() * t.element_size() for t in (self.codes, self.low, self.step))


def quantize_keys(keys: torch.Tensor, bits: int, stat_dtype: torch.dtype = torch.float16) -> QuantizedKeys:
    """Per-channel asymmetric quantization of a key block ``(..., T, D)``."""
    _check_bits(bits, keys.shape[-1])
    codes, low, step = _minmax_codes(keys, -2, bits, stat_dtype)
    return QuantizedKeys(pack(codes, bits), low, step, bits)


def dequantize_keys(block: QuantizedKeys, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The key block :func:`quantize_keys` encoded, in ``dtype``."""
    codes = unpack(block.codes, block.bits).float()
    return (codes * block.step.float() + block.low.float()).to(dtype)


@dataclass
class QuantizedValues:
    """A value block ``(..., T, D)`` in channel-separable token-wise form: packed codes, per-channel
    normalizers ``channel``, per-token ``low`` and ``step``."""

    codes: torch.Tensor  # (..., T, D * bits / 8) uint8
    channel: torch.Tensor  # (..., 1, D)
    low: torch.Tensor  # (..., T, 1)
    step: torch.Tensor  # (..., T, 1)
    bits: int

    def nbytes(self) -> int:
        """Bytes held (codes and statistics)."""
        return sum(t.numel() * t.element_size() for t in (self.codes, self.channel, self.low, self.step))


def quantize_values(values: torch.Tensor, bits: int, stat_dtype: torch.dtype = torch.float16) -> QuantizedValues:
    """Channel-separable token-wise quantization of a value block ``(..., T, D)``."""
    _check_bits(bits, values.shape[-1])
    channel = values.abs().amax(dim=-2, keepdim=True).float().sqrt().clamp_(min=1e-4).to(stat_dtype)
    codes, low, step = _minmax_codes(values.float() / channel.float(), -1, bits, stat_dtype)
    return QuantizedValues(pack(codes, bits), channel, low, step, bits)


def dequantize_values(block: QuantizedValues, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The value block :func:`quantize_values` encoded, in ``dtype``."""
    codes = unpack(block.codes, block.bits).float()
    return ((codes * block.step.float() + block.low.float()) * block.channel.float()).to(dtype)
