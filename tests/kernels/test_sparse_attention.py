"""Sparse-prefill attention: the Triton kernel against its PyTorch reference (``TRITON_INTERPRET=1`` on CPU), the
reference against dense attention under the equivalent mask, and the dispatcher.

Shapes stay small: the interpreter is slow. bfloat16 is only tested on a GPU (the interpreter's bf16 dot is wrong).
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton

import pytest  # noqa: E402

from mmaccel.kernels import (  # noqa: E402
    attention_reference,
    sparse_attention,
    sparse_attention_reference,
    sparse_attention_triton,
    triton_available,
)
from mmaccel.kernels.sparse_attention import tile_limits  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if torch.cuda.is_available() else [])
needs_triton = pytest.mark.skipif(not triton_available(), reason="triton does not import here")


def _case(batch, q_heads, kv_heads, q_len, kv_len, head_dim, density, dtype, seed=0):
    """q, k, v and a random ascending index set keeping ``density`` of the keys per (batch, kv head), padded with
    junk beyond each row's count (the op must ignore it)."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, q_heads, q_len, head_dim, generator=gen)
    k = torch.randn(batch, kv_heads, kv_len, head_dim, generator=gen)
    v = torch.randn(batch, kv_heads, kv_len, head_dim, generator=gen)
    width = max(1, round(density * kv_len))
    index = torch.zeros(batch, kv_heads, width, dtype=torch.int64)
    count = torch.zeros(batch, kv_heads, dtype=torch.int64)
    for b in range(batch):
        for h in range(kv_heads):
            n = max(0, width - (b + h) % 2)  # some rows keep one key fewer: padding in use
            chosen = torch.sort(torch.randperm(kv_len, generator=gen)[:n]).values
            index[b, h, :n] = chosen
            index[b, h, n:] = kv_len - 1
            count[b, h] = n
    return (*(t.to(DEVICE, dtype) for t in (q, k, v)), index.to(DEVICE), count.to(DEVICE))


def _dense_oracle(q, k, v, index, count, causal):
    """Dense attention with a mask that allows exactly the selected keys (and causality)."""
    batch, kv_heads, kv_len = k.shape[:3]
    q_len = q.shape[2]
    allowed = torch.zeros(batch, kv_heads, q_len, kv_len, dtype=torch.bool, device=q.device)
    for b in range(batch):
        for h in range(kv_heads):
            allowed[b, h, :, index[b, h, :count[b, h]]] = True
    if causal:
        positions = torch.arange(q_len, device=q.device)[:, None] + (kv_len - q_len)
        allowed &= torch.arange(kv_len, device=q.device)[None, :] <= positions
    return attention_reference(q, k, v, allowed.repeat_interleave(q.shape[1] // kv_heads, dim=1))


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("q_len, kv_len", [(13, 13), (5, 21)])  # prefill; a chunk against a cache
def test_reference_equals_dense_attention_under_the_equivalent_mask(causal, q_len, kv_len):
    case = _case(2, 4, 2, q_len, kv_len, 8, 0.5, torch.float32)
    expected = _dense_oracle(*case, causal)
    torch.testing.assert_close(sparse_attention_reference(*case, causal=causal), expected, atol=1e-6, rtol=1e-5)


def test_keeping_every_key_is_dense_attention():
    q, k, v, _, _ = _case(1, 4, 4, 9, 9, 8, 1.0, torch.float32)
    index = torch.arange(9).expand(1, 4, 9)
    count = torch.full((1, 4), 9)
    torch.testing.assert_close(sparse_attention_reference(q, k, v, index, count), attention_reference(q, k, v))


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("q_heads, kv_heads", [(4, 4), (4, 2), (8, 2)])
@pytest.mark.parametrize("density", [0.1, 0.5, 1.0])
def test_kernel_matches_reference(dtype, q_heads, kv_heads, density):
    case = _case(2, q_heads, kv_heads, 23, 23, 16, density, dtype, seed=q_heads + kv_heads)
    for causal in (True, False):
        out = sparse_attention_triton(*case, causal=causal)
        expected = sparse_attention_reference(*case, causal=causal)
        assert out.shape == expected.shape and out.dtype == dtype
        torch.testing.assert_close(out.float(), expected.float(), atol=TOL[dtype], rtol=TOL[dtype])


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_odd_head_dim_chunked_prefill_and_empty_rows(dtype):
    case = _case(1, 6, 3, 7, 30, 12, 0.3, dtype, seed=7)
    q, k, v, index, count = case
    count[0, 1] = 0  # a head that keeps nothing: its rows return zeros
    out = sparse_attention_triton(q, k, v, index, count)
    torch.testing.assert_close(out.float(), sparse_attention_reference(q, k, v, index, count).float(),
                               atol=TOL[dtype], rtol=TOL[dtype])
    assert out[:, :, 2:4].abs().max() == 0


def test_tile_limits_stop_at_the_tile_s_last_position():
    index = torch.tensor([[[0, 2, 5, 9, 9]]])
    count = torch.tensor([[4]])
    # q_len = kv_len = 10, one query head per kv head, tiles of 4 rows: last positions 3, 7, 9
    assert tile_limits(index, count, 10, 10, 1, 4, causal=True).tolist() == [[[2, 3, 4]]]
    assert tile_limits(index, count, 10, 10, 1, 4, causal=False).tolist() == [[[4, 4, 4]]]
    # two query heads per kv head: the middle tile spans both heads, so it needs every key up to position 9
    assert tile_limits(index, count, 5, 10, 2, 4, causal=True).tolist() == [[[3, 4, 4]]]


def test_dispatcher_and_errors():
    case = _case(1, 2, 1, 5, 5, 8, 0.6, torch.float32)
    torch.testing.assert_close(sparse_attention(*case, backend="torch"), sparse_attention_reference(*case))
    with pytest.raises(ValueError, match="allowed: auto, torch, triton"):
        sparse_attention(*case, backend="cuda")
    q, k, v, index, count = case
    with pytest.raises(ValueError, match=r"key_index values must lie in \[0, 5\)"):
        sparse_attention_reference(q, k, v, index + 10, count)
    with pytest.raises(ValueError, match="key_count"):
        sparse_attention_reference(q, k, v, index, count[:, :0])
