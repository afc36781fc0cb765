"""Quantized decode attention: the Triton kernel against its PyTorch reference (``TRITON_INTERPRET=1`` on CPU), the
reference against dense attention over the dequantized cache in sequence order, and the dispatcher.

The segments are written by the cache's own packer (:func:`mmaccel.kv.cache.quantize_block`), so the kernel is
tested on the layout it reads in use. Shapes stay small: the interpreter is slow.
"""

import importlib
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton

import pytest  # noqa: E402

from mmaccel.kernels import (  # noqa: E402
    attention_reference,
    quantized_attention,
    quantized_attention_reference,
    quantized_attention_triton,
    triton_available,
)
from mmaccel.kernels.quantized_attention_reference import dequantize_segment  # noqa: E402
from mmaccel.kv.cache import append_segment, quantize_block  # noqa: E402

dense_module = importlib.import_module("mmaccel.kernels.attention")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if torch.cuda.is_available() else [])
needs_triton = pytest.mark.skipif(not triton_available(), reason="triton does not import here")


def _cache(batch=2, kv_heads=2, head_dim=32, blocks=3, block=16, window=9, salient_ratio=0.6, bits=(4, 2),
           dtype=torch.float32, seed=0):
    """Packed segments of ``blocks`` blocks and a full-precision window, with the full-precision keys and values
    they came from (``(B, Hkv, L, D)``, sequence order)."""
    gen = torch.Generator().manual_seed(seed)
    length = blocks * block + window
    keys = torch.randn(batch, kv_heads, length, head_dim, generator=gen)
    keys[..., 3] += 4.0  # an outlier channel, as real keys have
    values = torch.randn(batch, kv_heads, length, head_dim, generator=gen)
    segments = []
    for index in range(blocks):
        part = slice(index * block, (index + 1) * block)
        scores = torch.rand(batch, kv_heads, block, generator=gen)
        packed = quantize_block(keys[:, :, part], values[:, :, part], scores, index * block, *bits, salient_ratio)
        segments = packed if not segments else [append_segment(a, b) for a, b in zip(segments, packed, strict=True)]
    move = {"device": DEVICE}
    segments = [type(s)(s.bits, s.per_block, *(t.to(**move) for t in s.tensors())) for s in segments]
    window_k, window_v = (t[:, :, blocks * block:].to(DEVICE, dtype) for t in (keys, values))
    return segments, window_k, window_v, blocks * block


def _query(batch, q_heads, q_len, head_dim, dtype, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, q_heads, q_len, head_dim, generator=gen).to(DEVICE, dtype)


def _masks(batch, packed, q_len, window):
    """Left padding over the first packed positions of row 0, and a window mask that hides one extra column."""
    packed_mask = torch.ones(batch, packed, dtype=torch.bool, device=DEVICE)
    packed_mask[0, :7] = False
    rows = torch.arange(q_len, device=DEVICE)[:, None] + (window - q_len)
    window_mask = (torch.arange(window, device=DEVICE)[None, :] <= rows)[None].repeat(batch, 1, 1)
    window_mask[-1, :, 1] = False
    return packed_mask, window_mask


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("q_len,q_heads,masked", [(1, 4, False), (1, 4, True), (3, 2, True), (2, 8, False)])
def test_kernel_matches_reference(dtype, q_len, q_heads, masked):
    segments, window_k, window_v, packed = _cache(dtype=dtype)
    q = _query(2, q_heads, q_len, 32, dtype)
    masks = _masks(2, packed, q_len, window_k.shape[2]) if masked else (None, None)
    kwargs = dict(packed_mask=masks[0], window_mask=masks[1])
    want = quantized_attention_reference(q, segments, window_k, window_v, **kwargs)
    got = quantized_attention_triton(q, segments, window_k, window_v, **kwargs)
    torch.testing.assert_close(got.float(), want.float(), atol=TOL[dtype], rtol=TOL[dtype])


@needs_triton
@pytest.mark.parametrize("salient_ratio,bits,head_dim", [(0.0, (4, 2), 16), (1.0, (8, 2), 16), (0.5, (8, 4), 16),
                                                           (0.6, (4, 2), 24)])
def test_kernel_reads_one_segment_other_bit_widths_and_head_sizes(salient_ratio, bits, head_dim):
    segments, window_k, window_v, _ = _cache(salient_ratio=salient_ratio, bits=bits, head_dim=head_dim, seed=2)
    assert len(segments) == (1 if salient_ratio in (0.0, 1.0) else 2)
    q = _query(2, 4, 1, head_dim, torch.float32)
    torch.testing.assert_close(quantized_attention_triton(q, segments, window_k, window_v),
                               quantized_attention_reference(q, segments, window_k, window_v), atol=1e-5, rtol=1e-5)


@needs_triton
def test_split_shares_merge_exactly(monkeypatch):
    """The flash-decoding path (used on GPUs when a launch has few programs): every part split in shares."""
    monkeypatch.setattr(dense_module, "_num_splits", lambda *args: 3)
    segments, window_k, window_v, packed = _cache(blocks=5, window=40)
    q = _query(2, 4, 1, 32, torch.float32)
    packed_mask, _ = _masks(2, packed, 1, 40)
    packed_mask[1, :] = False  # row 1 sees only its window: some shares see nothing
    want = quantized_attention_reference(q, segments, window_k, window_v, packed_mask=packed_mask)
    got = quantized_attention_triton(q, segments, window_k, window_v, packed_mask=packed_mask)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_reference_equals_dense_attention_over_the_dequantized_cache_in_sequence_order():
    segments, window_k, window_v, packed = _cache()
    q = _query(2, 4, 3, 32, torch.float32)
    packed_mask, window_mask = _masks(2, packed, 3, window_k.shape[2])
    keys = torch.zeros(2, 2, packed, 32, device=DEVICE)
    values = torch.zeros_like(keys)
    for segment in segments:
        k, v = dequantize_segment(segment, torch.float32)
        index = segment.positions.long()[..., None].expand_as(k)
        keys.scatter_(2, index, k)
        values.scatter_(2, index, v)
    allowed = torch.cat([packed_mask[:, None].expand(2, 3, packed), window_mask], dim=-1)[:, None]
    want = attention_reference(q, torch.cat([keys, window_k], 2), torch.cat([values, window_v], 2), allowed)
    got = quantized_attention_reference(q, segments, window_k, window_v, packed_mask=packed_mask,
                                        window_mask=window_mask)
    torch.testing.assert_close(got, want)
    # dequantized a block at a time (the CPU path's bounded memory), merged by log-sum-exp: the same
    chunked = quantized_attention_reference(q, segments, window_k, window_v, packed_mask=packed_mask,
                                            window_mask=window_mask, chunk=1)
    torch.testing.assert_close(chunked, want)


def test_without_packed_tokens_it_is_causal_attention_over_the_window():
    _, window_k, window_v, _ = _cache(blocks=0, window=12)
    q = _query(2, 4, 3, 32, torch.float32)
    torch.testing.assert_close(quantized_attention_reference(q, [], window_k, window_v),
                               attention_reference(q, window_k, window_v, causal=True))


def test_dispatcher_and_bad_arguments():
    segments, window_k, window_v, _ = _cache(head_dim=16)
    q = _query(2, 4, 1, 16, torch.float32)
    want = quantized_attention_reference(q, segments, window_k, window_v)
    torch.testing.assert_close(quantized_attention(q, segments, window_k, window_v, backend="torch"), want)
    with pytest.raises(ValueError, match="backend 'cuda' is not supported; allowed: auto, torch, triton"):
        quantized_attention(q, segments, window_k, window_v, backend="cuda")
    broken = type(segments[0])(segments[0].bits, 7, *segments[0].tensors())
    with pytest.raises(ValueError, match="cannot hold whole blocks of per_block=7"):
        quantized_attention(q, [broken], window_k, window_v, backend="torch")
    if triton_available():
        with pytest.raises(ValueError, match="at most 2 segments"):
            quantized_attention_triton(q, segments * 2, window_k, window_v)
