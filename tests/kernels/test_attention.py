"""The Triton attention kernel against its PyTorch reference (under TRITON_INTERPRET=1 on CPU), and the reference
against torch's SDPA."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from mmaccel.kernels import attention, attention_reference, attention_triton  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if torch.cuda.is_available() else [])


def _qkv(batch, q_heads, kv_heads, q_len, kv_len, head_dim, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, q_heads, q_len, head_dim, generator=gen)
    k = torch.randn(batch, kv_heads, kv_len, head_dim, generator=gen)
    v = torch.randn(batch, kv_heads, kv_len, head_dim, generator=gen)
    return (t.to(DEVICE, dtype) for t in (q, k, v))


def _check(q, k, v, mask=None, causal=True):
    got = attention_triton(q, k, v, mask, causal=causal)
    want = attention_reference(q, k, v, mask, causal=causal)
    assert got.shape == want.shape == (q.shape[0], q.shape[2], q.shape[1], q.shape[3])
    assert got.dtype == q.dtype and got.is_contiguous()
    tol = TOL[q.dtype]
    torch.testing.assert_close(got.float(), want.float(), atol=tol, rtol=tol)
    return got


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads", [(4, 4), (4, 2), (4, 1)], ids=["mha", "gqa2", "mqa"])
@pytest.mark.parametrize("length", [37, 70])
def test_causal_prefill(dtype, heads, length):
    q, k, v = _qkv(1, heads[0], heads[1], length, length, 32, dtype)
    _check(q, k, v)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("q_len,kv_len", [(1, 53), (5, 40), (1, 1)], ids=["decode", "chunk", "first"])
def test_decode_and_chunked_prefill_against_a_cache(dtype, q_len, kv_len):
    q, k, v = _qkv(2, 4, 2, q_len, kv_len, 16, dtype, seed=1)
    _check(q, k, v)


@pytest.mark.parametrize("dtype", DTYPES)
def test_left_padding_mask_and_fully_masked_rows(dtype):
    q_len = 12
    q, k, v = _qkv(2, 4, 2, q_len, q_len, 16, dtype, seed=2)
    pad = torch.ones(2, q_len, dtype=torch.bool, device=DEVICE)
    pad[0, :3] = False  # row 0 is left padded by 3
    causal = torch.ones(q_len, q_len, dtype=torch.bool, device=DEVICE).tril()
    mask = (causal[None] & pad[:, None, :])[:, None]  # (B, 1, Lq, Lk), as transformers' sdpa_mask builds it
    out = _check(q, k, v, mask=mask)
    assert torch.count_nonzero(out[0, :3]) == 0  # padded queries see nothing: exact zeros
    # an additive float mask means the same
    additive = torch.zeros(mask.shape, dtype=dtype, device=DEVICE).masked_fill(~mask, torch.finfo(dtype).min)
    torch.testing.assert_close(attention_triton(q, k, v, additive), out)


def test_per_head_mask_and_non_causal():
    q, k, v = _qkv(1, 4, 2, 9, 20, 16, torch.float32, seed=3)
    mask = torch.rand(1, 4, 9, 20, generator=torch.Generator().manual_seed(0)).to(DEVICE) > 0.5
    _check(q, k, v, mask=mask)
    _check(q, k, v, causal=False)


@pytest.mark.parametrize("head_dim", [80, 64])
def test_head_dims_including_non_power_of_two(head_dim):
    q, k, v = _qkv(1, 2, 1, 19, 19, head_dim, torch.float16, seed=4)
    _check(q, k, v)


def test_non_contiguous_inputs_as_transformers_passes_them():
    # transformers builds q/k/v as (B, L, H, D) projections viewed as (B, H, L, D)
    base_q = torch.randn(1, 21, 4, 16, device=DEVICE)
    base_kv = torch.randn(1, 21, 2, 16, device=DEVICE)
    q, k, v = base_q.transpose(1, 2), base_kv.transpose(1, 2), (base_kv * 2).transpose(1, 2)
    assert not q.is_contiguous()
    _check(q, k, v)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_reference_matches_sdpa(dtype):
    q, k, v = _qkv(2, 4, 2, 33, 33, 16, dtype, seed=5)
    want = F.scaled_dot_product_attention(q.float(), k.float().repeat_interleave(2, 1),
                                          v.float().repeat_interleave(2, 1), is_causal=True).transpose(1, 2)
    torch.testing.assert_close(attention_reference(q, k, v).float(), want, atol=TOL[dtype], rtol=TOL[dtype])
    # decode against a cache: causal aligned to the end = no mask for the last query
    q1 = q[:, :, -1:]
    want1 = F.scaled_dot_product_attention(q1.float(), k.float().repeat_interleave(2, 1),
                                           v.float().repeat_interleave(2, 1)).transpose(1, 2)
    torch.testing.assert_close(attention_reference(q1, k, v).float(), want1, atol=TOL[dtype], rtol=TOL[dtype])


def test_dispatcher():
    q, k, v = _qkv(1, 2, 1, 4, 4, 16, torch.float32)
    if DEVICE == "cpu":
        assert torch.equal(attention(q, k, v, backend="auto"), attention_reference(q, k, v))
    with pytest.raises(ValueError, match=r"'bogus'.*allowed: auto, torch, triton"):
        attention(q, k, v, backend="bogus")


def test_shape_errors_name_the_problem():
    q, k, v = _qkv(1, 3, 2, 4, 4, 16, torch.float32)
    with pytest.raises(ValueError, match="multiple of key/value heads"):
        attention_reference(q, k, v)
    q, k, v = _qkv(1, 2, 1, 4, 4, 16, torch.float32)
    with pytest.raises(ValueError, match="mask"):
        attention_reference(q, k, v, torch.ones(1, 1, 4, 5, dtype=torch.bool, device=DEVICE))


@pytest.mark.parametrize("q_len,kv_len", [(1, 150), (3, 97)])
def test_split_keys_flash_decoding_merge(monkeypatch, q_len, kv_len):
    """The split-KV path (used on GPUs when few programs would run) merges partial results exactly."""
    import importlib

    module = importlib.import_module("mmaccel.kernels.attention")  # the package exports a function of that name
    monkeypatch.setattr(module, "_num_splits", lambda *args: 3)
    q, k, v = _qkv(2, 4, 2, q_len, kv_len, 16, torch.float32, seed=6)
    _check(q, k, v)
    pad = torch.ones(2, 1, q_len, kv_len, dtype=torch.bool, device=DEVICE)
    pad[0, ..., :70] = False  # a whole split sees nothing for row 0
    _check(q, k, v, mask=pad)
