"""mmaccel's attention op: the Triton kernel against its PyTorch reference (under ``TRITON_INTERPRET=1`` on CPU), the
reference against ``torch.nn.functional.scaled_dot_product_attention``, the dispatcher, and the benchmark script.

Shapes stay small: the interpreter is slow. bfloat16 is only tested on a GPU (the interpreter's bf16 dot is wrong).
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton

import importlib  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from mmaccel.kernels import attention, attention_reference, attention_triton, triton_available  # noqa: E402

# The package exports a function named ``attention``, which hides the submodule of the same name.
attention_module = importlib.import_module("mmaccel.kernels.attention")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if torch.cuda.is_available() else [])
REPO = Path(__file__).resolve().parents[2]


def _qkv(batch, q_heads, kv_heads, q_len, kv_len, head_dim, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, q_heads, q_len, head_dim, generator=gen)
    k = torch.randn(batch, kv_heads, kv_len, head_dim, generator=gen)
    v = torch.randn(batch, kv_heads, kv_len, head_dim, generator=gen)
    return tuple(t.to(DEVICE, dtype) for t in (q, k, v))


def _check(q, k, v, mask=None, causal=True, scale=None):
    """Triton == reference within the dtype's tolerance; the output is (B, Lq, Hq, D), contiguous, in q.dtype."""
    got = attention_triton(q, k, v, mask, causal=causal, scale=scale)
    want = attention_reference(q, k, v, mask, causal=causal, scale=scale)
    assert got.shape == want.shape == (q.shape[0], q.shape[2], q.shape[1], q.shape[3])
    assert got.dtype == want.dtype == q.dtype and got.is_contiguous() and want.is_contiguous()
    tol = TOL[q.dtype]
    torch.testing.assert_close(got.float(), want.float(), atol=tol, rtol=tol)
    return got


def _left_padding_mask(batch, q_len, kv_len, pad):
    """transformers' ``sdpa_mask`` for a batch whose row 0 is left-padded by ``pad``: (B, 1, Lq, Lk) booleans."""
    keep = torch.ones(batch, kv_len, dtype=torch.bool, device=DEVICE)
    keep[0, :pad] = False
    causal = torch.ones(q_len, kv_len, dtype=torch.bool, device=DEVICE).tril(kv_len - q_len)
    return (causal[None] & keep[:, None, :])[:, None]


def _sdpa(q, k, v, mask=None, causal=False):
    """SDPA in float32 on GQA-repeated K/V, returned as (B, Lq, Hq, D)."""
    group = q.shape[1] // k.shape[1]
    out = F.scaled_dot_product_attention(q.float(), k.float().repeat_interleave(group, 1),
                                         v.float().repeat_interleave(group, 1), attn_mask=mask, is_causal=causal)
    return out.transpose(1, 2)


# --- the kernel against the reference -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("heads", [(4, 4), (4, 2), (4, 1)], ids=["mha", "gqa2", "mqa"])
@pytest.mark.parametrize("length", [37, 70])
def test_causal_prefill(dtype, heads, length):
    q, k, v = _qkv(1, heads[0], heads[1], length, length, 32, dtype)
    _check(q, k, v)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("q_len,kv_len", [(1, 53), (5, 40), (1, 1), (3, 130)], ids=["decode", "chunk", "first", "long"])
def test_decode_and_chunked_prefill_against_a_cache(dtype, q_len, kv_len):
    q, k, v = _qkv(2, 4, 2, q_len, kv_len, 32, dtype, seed=1)
    _check(q, k, v)


def test_more_queries_than_keys_gives_zero_rows():
    # bottom-right alignment: with Lq=6, Lk=4 the first two queries see no key at all
    q, k, v = _qkv(1, 2, 1, 6, 4, 16, torch.float32, seed=7)
    out = _check(q, k, v)
    assert torch.count_nonzero(out[:, :2]) == 0 and torch.count_nonzero(out[:, 2:]) > 0


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_left_padding_mask_and_fully_masked_rows(dtype):
    q_len = 12
    q, k, v = _qkv(2, 4, 2, q_len, q_len, 32, dtype, seed=2)
    mask = _left_padding_mask(2, q_len, q_len, pad=3)
    out = _check(q, k, v, mask=mask)
    assert torch.count_nonzero(out[0, :3]) == 0  # padded queries may attend to nothing: exact zeros
    assert torch.count_nonzero(attention_reference(q, k, v, mask)[0, :3]) == 0
    assert torch.isfinite(out.float()).all()
    # `causal` is ignored when a mask is given
    torch.testing.assert_close(attention_triton(q, k, v, mask, causal=False), out)
    # an additive float mask (0 / dtype minimum) means the same
    additive = torch.zeros(mask.shape, dtype=dtype, device=DEVICE).masked_fill(~mask, torch.finfo(dtype).min)
    torch.testing.assert_close(attention_triton(q, k, v, additive), out)
    # as does one with -inf, or one with extra key columns (cut to Lk)
    with_inf = torch.zeros(mask.shape, device=DEVICE).masked_fill(~mask, float("-inf"))
    torch.testing.assert_close(attention_triton(q, k, v, with_inf), out)
    longer = torch.cat([mask, torch.ones_like(mask[..., :5])], dim=-1)
    torch.testing.assert_close(attention_triton(q, k, v, longer), out)


def test_padding_mask_in_decode_against_a_cache():
    mask = _left_padding_mask(2, 1, 45, pad=40)  # row 0 sees 5 keys
    q, k, v = _qkv(2, 4, 1, 1, 45, 32, torch.float16, seed=8)
    _check(q, k, v, mask=mask)


def test_per_head_mask_non_causal_and_custom_scale():
    q, k, v = _qkv(1, 4, 2, 9, 70, 16, torch.float32, seed=3)
    mask = torch.rand(1, 4, 9, 70, generator=torch.Generator().manual_seed(0)).to(DEVICE) > 0.5
    mask[0, 1, 4] = False  # one fully masked row in one head only
    out = _check(q, k, v, mask=mask)
    assert torch.count_nonzero(out[0, 4, 1]) == 0 and torch.count_nonzero(out[0, 4, 0]) > 0
    _check(q, k, v, causal=False)
    _check(q, k, v, scale=0.3)


@pytest.mark.parametrize("head_dim", [80, 64])
def test_head_dims_including_non_power_of_two(head_dim):
    q, k, v = _qkv(1, 2, 1, 19, 19, head_dim, torch.float16, seed=4)
    _check(q, k, v)
    _check(q[:, :, -1:], k, v)


def test_non_contiguous_inputs_as_transformers_passes_them():
    # transformers projects to (B, L, H, D) and hands the attention function (B, H, L, D) views
    gen = torch.Generator().manual_seed(5)
    base_q = torch.randn(1, 21, 4, 16, generator=gen).to(DEVICE)
    base_kv = torch.randn(1, 21, 2, 32, generator=gen).to(DEVICE)  # k and v interleaved in one buffer
    q = base_q.transpose(1, 2)
    k, v = base_kv[..., :16].transpose(1, 2), base_kv[..., 16:].transpose(1, 2)
    assert not (q.is_contiguous() or k.is_contiguous() or v.is_contiguous())
    _check(q, k, v)
    mask = _left_padding_mask(1, 21, 21, pad=2).expand(1, 4, 21, 21)  # stride-0 head dim, not copied
    _check(q, k, v, mask=mask)


@pytest.mark.parametrize("q_len,kv_len", [(1, 150), (3, 97)])
def test_split_keys_flash_decoding_merge(monkeypatch, q_len, kv_len):
    """The split-KV path (used on GPUs when a launch has few programs) merges partial results exactly."""
    monkeypatch.setattr(attention_module, "_num_splits", lambda *args: 3)
    q, k, v = _qkv(2, 4, 2, q_len, kv_len, 16, torch.float32, seed=6)
    _check(q, k, v)
    pad = torch.ones(2, 1, q_len, kv_len, dtype=torch.bool, device=DEVICE)
    pad[0, ..., :70] = False  # a whole split sees nothing for row 0
    if q_len > 1:
        pad[1, :, 1] = False  # and a fully masked row
    _check(q, k, v, mask=pad)


# --- the reference against SDPA ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_reference_matches_sdpa(dtype):
    tol = TOL[dtype]
    q, k, v = _qkv(2, 4, 2, 33, 33, 16, dtype, seed=5)
    torch.testing.assert_close(attention_reference(q, k, v).float(), _sdpa(q, k, v, causal=True), atol=tol, rtol=tol)
    torch.testing.assert_close(attention_reference(q, k, v, causal=False).float(), _sdpa(q, k, v),
                               atol=tol, rtol=tol)
    # decode and chunked prefill: causal aligned bottom-right, built here independently as an explicit mask
    for q_len in (1, 5):
        chunk = q[:, :, -q_len:]
        offset_causal = torch.ones(q_len, 33, dtype=torch.bool, device=DEVICE).tril(33 - q_len)
        torch.testing.assert_close(attention_reference(chunk, k, v).float(), _sdpa(chunk, k, v, mask=offset_causal),
                                   atol=tol, rtol=tol)
    # a padding mask, on the rows that may attend to something
    mask = _left_padding_mask(2, 33, 33, pad=3)
    torch.testing.assert_close(attention_reference(q, k, v, mask)[1].float(), _sdpa(q, k, v, mask=mask)[1],
                               atol=tol, rtol=tol)
    torch.testing.assert_close(attention_reference(q, k, v, mask)[0, 3:].float(), _sdpa(q, k, v, mask=mask)[0, 3:],
                               atol=tol, rtol=tol)


# --- dispatcher, errors, optional triton ----------------------------------------------------------------------


def test_dispatcher(monkeypatch):
    q, k, v = _qkv(1, 2, 1, 4, 4, 16, torch.float32)
    assert triton_available()
    if DEVICE == "cpu":
        def no_triton(*args, **kwargs):
            raise AssertionError("auto picked triton on CPU")

        monkeypatch.setattr(attention_module, "attention_triton", no_triton)
        assert torch.equal(attention(q, k, v, backend="auto"), attention_reference(q, k, v))
        monkeypatch.undo()
    assert torch.equal(attention(q, k, v, backend="torch"), attention_reference(q, k, v))
    torch.testing.assert_close(attention(q, k, v, backend="triton"), attention_reference(q, k, v),
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"'bogus'.*allowed: auto, torch, triton"):
        attention(q, k, v, backend="bogus")


def test_shape_and_dtype_errors_name_the_problem():
    q, k, v = _qkv(1, 3, 2, 4, 4, 16, torch.float32)
    with pytest.raises(ValueError, match="multiple of key/value heads"):
        attention_reference(q, k, v)
    q, k, v = _qkv(1, 2, 1, 4, 4, 16, torch.float32)
    with pytest.raises(ValueError, match="mask"):
        attention_reference(q, k, v, torch.ones(1, 1, 4, 3, dtype=torch.bool, device=DEVICE))
    with pytest.raises(ValueError, match="mask"):
        attention_triton(q, k, v, torch.ones(2, 1, 4, 4, dtype=torch.bool, device=DEVICE))
    with pytest.raises(ValueError, match="one dtype"):
        attention_triton(q, k.half(), v.half())


def test_import_and_dispatch_without_triton():
    """``import mmaccel.kernels`` works where triton does not import; backend='triton' then names what is missing."""
    code = """
import sys
sys.modules["triton"] = None  # `import triton` now raises ImportError
import torch
import mmaccel.kernels as kernels
assert not kernels.triton_available()
q = torch.randn(1, 2, 3, 8)
k = v = torch.randn(1, 1, 3, 8)
assert kernels.attention(q, k, v).shape == (1, 3, 2, 8)
try:
    kernels.attention(q, k, v, backend="triton")
except RuntimeError as err:
    assert "triton" in str(err) and "backend='torch'" in str(err), err
else:
    raise AssertionError("no RuntimeError")
assert "triton" not in [name.split(".")[0] for name in sys.modules if sys.modules[name] is not None]
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_benchmark_smoke(tmp_path):
    """The GPU benchmark script runs end to end on tiny shapes (CPU: interpreter) and writes its JSON."""
    from mmaccel.kernels import benchmark

    path = tmp_path / "bench.json"
    assert benchmark.main(["--smoke", "--dtypes", "float32", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    assert not report["failures"] and len(report["rows"]) == len(benchmark.SMOKE)
    for row in report["rows"]:
        assert row["max_abs_err_vs_sdpa"] < 1e-4 and row["ours_ms"] > 0 and row["sdpa_ms"] > 0


def test_one_reason_decides_whether_triton_can_run(monkeypatch):
    from mmaccel.kernels import triton_unusable_reason

    assert triton_unusable_reason("cuda:0") is None  # triton imports here (it is a test dependency)
    monkeypatch.setattr(attention_module, "_interpreter_mode", lambda: False)
    reason = triton_unusable_reason("cpu")
    assert reason is not None and "TRITON_INTERPRET=1" in reason
    q = torch.zeros(1, 1, 2, 16)
    with pytest.raises(RuntimeError, match="attention backend 'triton' cannot run: it needs CUDA tensors"):
        attention(q, q, q, backend="triton")
