"""The mixed-precision cache layer and the kv="mixed" component."""

import pytest
import torch

from mmaccel import accelerate, restore
from mmaccel.attention import KV_ATTR
from mmaccel.kv.cache import MixedPrecisionLayer
from mmaccel.kv.quant import quantize_keys
from mmaccel.memory import tensor_bytes
from mmaccel.zoo.tiny import sample_inputs


def _filled_layer(tokens=100, window=16, block=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    keys, values = torch.randn(1, 2, tokens, 16, generator=gen), torch.randn(1, 2, tokens, 16, generator=gen)
    layer = MixedPrecisionLayer(window=window, block=block)
    layer.update(keys[:, :, :tokens - 2], values[:, :, :tokens - 2])
    layer.observe(torch.rand(1, 2, tokens - 2, generator=gen), torch.ones(1, tokens - 2))
    for t in range(tokens - 2, tokens):  # decode steps pack the scored blocks
        out_k, out_v = layer.update(keys[:, :, t:t + 1], values[:, :, t:t + 1])
        layer.observe(torch.rand(1, 2, layer.keys.shape[-2], generator=gen), torch.ones(1, layer.keys.shape[-2]))
    return layer, keys, values, out_k, out_v


def test_blocks_are_packed_in_order_within_the_low_bit_error_and_the_window_is_exact():
    layer, keys, values, out_k, out_v = _filled_layer()
    assert layer.packed_tokens == 64 and layer.get_seq_length() == 100 and len(layer.blocks) == 2
    assert torch.equal(out_k[:, :, 64:], keys[:, :, 64:]) and torch.equal(out_v[:, :, 64:], values[:, :, 64:])
    # every packed token is at worst at 2 bits: half a 2-bit step of its block's channel range (keys)
    for start in (0, 32):
        block = keys[:, :, start:start + 32]
        bound = quantize_keys(block, 2).step.float() / 2 + 1e-3
        assert ((out_k[:, :, start:start + 32] - block).abs() <= bound).all()
    assert (out_k[:, :, :64] - keys[:, :, :64]).abs().max() > 0  # really quantized
    salient = layer.blocks[0].salient
    assert salient == round(0.6 * 32)


def test_crop_then_continue_equals_never_having_drafted():
    drafted, keys, values, _, _ = _filled_layer()
    plain, _, _, _, _ = _filled_layer()
    draft_k, draft_v = torch.randn(1, 2, 3, 16), torch.randn(1, 2, 3, 16)
    drafted.update(draft_k, draft_v)
    drafted.crop(-3)
    assert drafted.get_seq_length() == plain.get_seq_length()
    extra_k, extra_v = torch.randn(1, 2, 1, 16), torch.randn(1, 2, 1, 16)
    got, want = drafted.update(extra_k, extra_v), plain.update(extra_k, extra_v)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    with pytest.raises(ValueError, match="only the .* most recent are in full precision"):
        drafted.crop(-90)


def test_generate_uses_the_mixed_cache_and_it_is_smaller(tiny):
    model, processor = tiny("llava")
    inputs = sample_inputs("llava", processor, batch_size=2, seed=1)
    kwargs = dict(max_new_tokens=40, min_new_tokens=40, do_sample=False, return_dict_in_generate=True)
    with torch.no_grad():
        base = model.generate(**inputs, **kwargs)
        try:
            accelerate(model, kv={"method": "mixed", "window": 8, "block": 16})
            mixed = model.generate(**inputs, **kwargs)
        finally:
            restore(model)
    assert all(isinstance(layer, MixedPrecisionLayer) for layer in mixed.cache.layers)
    assert all(layer.packed_tokens > 0 for layer in mixed.cache.layers)
    assert tensor_bytes(mixed.cache) < tensor_bytes(base.cache) / 2
    assert mixed.sequences.shape == base.sequences.shape
    assert not any(KV_ATTR in m.__dict__ for m in model.modules())
