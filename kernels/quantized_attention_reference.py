"""PyTorch reference of decode attention over a mixed-precision KV cache: the CPU path, and the oracle of the
Triton kernel in :mod:`mmaccel.kernels.quantized_attention`.

The cache it reads (written by :mod:`mmaccel.kv.cache`) has two parts:

* **packed segments** (:class:`QuantizedSegment`), one per bit width: the cache's older tokens, quantized block by
  block. Within a block of the cache, each (batch row, key/value head) sends a fixed number of tokens
  (``per_block``) to each segment, so a segment's token ``t`` belongs to block ``t // per_block``. Keys carry
  per-channel statistics per block, values per-channel normalizers per block and per-token statistics (ZipCache's
  channel-separable token-wise scheme). Codes are packed planar: the last dimension of ``D * bits / 8`` bytes holds
  channel ``c`` of a token in byte ``c % (D * bits / 8)``, bits ``(c // (D * bits / 8)) * bits`` upwards.
  ``positions`` gives each packed token's position in the sequence (tokens are stored in no particular order).
* the **window**: the most recent tokens, in full precision, ``(B, Hkv, W, D)``, in sequence order, after every
  packed token.

Semantics shared with the kernel (same signature):

* ``q`` is ``(B, Hq, Lq, D)``, the last ``Lq`` positions of the sequence (they are the window's last ``Lq`` tokens,
  the cache having been updated with them); ``Hq % Hkv == 0``: query head ``h`` reads key/value head
  ``h // (Hq // Hkv)``.
* Every query may see every packed token, except where ``packed_mask`` ``(B, P)`` (``P`` the number of packed
  positions) is False — padding. Packed tokens all precede every query, so their visibility cannot depend on the
  query.
* In the window, query ``i`` sees token ``j`` iff ``window_mask[b, i, j]`` (``(B, Lq, W)`` boolean) or, without a
  window mask, iff ``j <= i + W - Lq`` (causal).
* ``scale`` defaults to ``1 / sqrt(D)``; a row that sees nothing returns zeros; the result is ``(B, Lq, Hq, D)``,
  contiguous, in ``q.dtype``.

The reference dequantizes the segments a chunk at a time (a transient full-precision copy of one chunk, which the
kernel avoids altogether) and merges the chunks' softmax by their log-sum-exp.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: Bit widths a segment may use.
SEGMENT_BITS = (2, 4, 8)


@dataclass
class QuantizedSegment:
    """Packed tokens at one bit width (module docstring); ``N`` tokens, ``N / per_block`` blocks, per (B, Hkv)."""

    bits: int
    per_block: int  # tokens of each cache block in this segment
    key_codes: torch.Tensor  # (B, Hkv, N, D * bits / 8) uint8
    key_low: torch.Tensor  # (B, Hkv, N / per_block, D) float16: per block and channel
    key_step: torch.Tensor  # (B, Hkv, N / per_block, D)
    value_codes: torch.Tensor  # (B, Hkv, N, D * bits / 8) uint8
    value_channel: torch.Tensor  # (B, Hkv, N / per_block, D): per-channel normalizer of each block
    value_low: torch.Tensor  # (B, Hkv, N) float16: per token
    value_step: torch.Tensor  # (B, Hkv, N)
    positions: torch.Tensor  # (B, Hkv, N) int32: each token's position in the sequence

    @property
    def tokens(self) -> int:
        """Tokens per (batch row, key/value head)."""
        return self.key_codes.shape[2]

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor the segment holds (for byte counts and device moves)."""
        return [self.key_codes, self.key_low, self.key_step, self.value_codes, self.value_channel, self.value_low,
                self.value_step, self.positions]


def check_segment(segment: QuantizedSegment, batch: int, kv_heads: int, head_dim: int) -> None:
    """Raise ``ValueError`` when a segment's tensors do not fit each other or the window."""
    if segment.bits not in SEGMENT_BITS:
        raise ValueError(f"segment bits={segment.bits} is not supported; allowed: {SEGMENT_BITS}")
    tokens, per_block = segment.tokens, segment.per_block
    packed = head_dim * segment.bits // 8
    blocks = tokens // per_block if per_block > 0 else 0
    expected = {
        "key_codes": (batch, kv_heads, tokens, packed), "value_codes": (batch, kv_heads, tokens, packed),
        "key_low": (batch, kv_heads, blocks, head_dim), "key_step": (batch, kv_heads, blocks, head_dim),
        "value_channel": (batch, kv_heads, blocks, head_dim), "value_low": (batch, kv_heads, tokens),
        "value_step": (batch, kv_heads, tokens), "positions": (batch, kv_heads, tokens),
    }
    if per_block <= 0 or tokens % per_block:
        raise ValueError(f"a segment of {tokens} tokens cannot hold whole blocks of per_block={per_block}")
    for name, shape in expected.items():
        got = tuple(getattr(segment, name).shape)
        if got != shape:
            raise ValueError(f"segment {name} is {got}; expected {shape} (B, Hkv, tokens or blocks, ...)")


def dequantize_segment(segment: QuantizedSegment, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values ``(B, Hkv, N, D)`` of a segment, in ``dtype`` (in the segment's storage order)."""
    per_byte = 8 // segment.bits
    mask = (1 << segment.bits) - 1
    shifts = torch.arange(per_byte, device=segment.key_codes.device, dtype=torch.uint8) * segment.bits

    def codes(packed: torch.Tensor) -> torch.Tensor:
        # (..., Dp) bytes -> (..., per_byte, Dp) codes -> (..., D): channel c = plane * Dp + byte
        planes = (packed[..., None, :] >> shifts[:, None]) & mask
        return planes.flatten(-2).float()

    def per_token(stat: torch.Tensor) -> torch.Tensor:  # (B, H, blocks, D) -> (B, H, N, D)
        return stat.float().repeat_interleave(segment.per_block, dim=2)

    keys = codes(segment.key_codes) * per_token(segment.key_step) + per_token(segment.key_low)
    values = (codes(segment.value_codes) * segment.value_step.float()[..., None]
              + segment.value_low.float()[..., None]) * per_token(segment.value_channel)
    return keys.to(dtype), values.to(dtype)


def _partial_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor, scale: float
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention of ``q`` ``(B, Hkv, G, Lq, D)`` over one part of the keys ``(B, Hkv, n, D)`` where
    ``allowed`` ``(B, Hkv, Lq, n)``: the normalized output ``(B, Hkv, G, Lq, D)`` and the log-sum-exp of the scores
    ``(B, Hkv, G, Lq)`` (``-inf`` where nothing is allowed), in float32."""
    scores = torch.einsum("bhgqd,bhnd->bhgqn", q, k.float()) * scale
    scores = scores.masked_fill(~allowed[:, :, None], float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    weights = torch.exp(scores - torch.where(torch.isinf(lse), 0.0, lse)[..., None])
    return torch.einsum("bhgqn,bhnd->bhgqd", weights, v.float()), lse


def quantized_attention_reference(
    q: torch.Tensor,
    segments: list[QuantizedSegment],
    window_k: torch.Tensor,
    window_v: torch.Tensor,
    *,
    packed_mask: torch.Tensor | None = None,
    window_mask: torch.Tensor | None = None,
    scale: float | None = None,
    chunk: int = 4096,
) -> torch.Tensor:
    """Attention of ``q`` over the packed segments and the window (see the module docstring); ``(B, Lq, Hq, D)``.

    The packed tokens are dequantized ``chunk`` at a time and the parts merged by their log-sum-exp, so the
    transient memory stays that of one chunk however long the cache (this is the CPU path)."""
    batch, q_heads, q_len, head_dim = q.shape
    kv_heads, window = window_k.shape[1], window_k.shape[2]
    scale = head_dim ** -0.5 if scale is None else float(scale)
    grouped = q.float().view(batch, kv_heads, q_heads // kv_heads, q_len, head_dim)
    parts = []
    for segment in segments:
        check_segment(segment, batch, kv_heads, head_dim)
        step = max(segment.per_block, chunk // segment.per_block * segment.per_block)  # whole blocks per chunk
        for start in range(0, segment.tokens, step):
            piece = _slice_segment(segment, start, start + step)
            k, v = dequantize_segment(piece, q.dtype)
            if packed_mask is None:
                visible = torch.ones(batch, kv_heads, piece.tokens, dtype=torch.bool, device=q.device)
            else:
                visible = packed_mask.gather(1, piece.positions.long().flatten(1)).view(piece.positions.shape)
            parts.append(_partial_attention(grouped, k, v, visible[:, :, None].expand(-1, -1, q_len, -1), scale))
    if window_mask is None:
        rows = torch.arange(q_len, device=q.device)[:, None] + (window - q_len)
        window_mask = (torch.arange(window, device=q.device)[None, :] <= rows)[None].expand(batch, q_len, window)
    window_mask = window_mask.to(torch.bool).expand(batch, q_len, window)[:, None].expand(-1, kv_heads, -1, -1)
    parts.append(_partial_attention(grouped, window_k.to(q.dtype), window_v.to(q.dtype), window_mask, scale))

    lse = torch.stack([part_lse for _, part_lse in parts])  # (parts, B, Hkv, G, Lq)
    total = torch.logsumexp(lse, dim=0)
    weights = torch.exp(lse - torch.where(torch.isinf(total), 0.0, total))  # rows that see nothing: all zero
    out = sum(w[..., None] * part for w, (part, _) in zip(weights, parts, strict=True))
    return out.reshape(batch, q_heads, q_len, head_dim).transpose(1, 2).contiguous().to(q.dtype)


def _slice_segment(segment: QuantizedSegment, start: int, stop: int) -> QuantizedSegment:
    """Tokens ``start:stop`` of a segment (whole blocks), as a segment of their own."""
    stop = min(stop, segment.tokens)
    first, last = start // segment.per_block, stop // segment.per_block
    per_token = [t[:, :, start:stop] for t in (segment.key_codes, segment.value_codes, segment.value_low,
                                               segment.value_step, segment.positions)]
    per_block = [t[:, :, first:last] for t in (segment.key_low, segment.key_step, segment.value_channel)]
    return QuantizedSegment(segment.bits, segment.per_block, per_token[0], per_block[0], per_block[1], per_token[1],
                            per_block[2], per_token[2], per_token[3], per_token[4])
