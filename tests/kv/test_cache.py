"""The mixed-precision cache layer and the kv="mixed" component."""

import copy

import pytest
import torch
from transformers import DynamicCache

from mmaccel import accelerate, restore
from mmaccel.attention import KV_ATTR
from mmaccel.bench import _shapes_world_inputs
from mmaccel.kv.cache import MixedPrecisionLayer
from mmaccel.kv.quant import quantize_keys
from mmaccel.memory import tensor_bytes
from mmaccel.patch import get_state
from mmaccel.zoo import load
from mmaccel.zoo.tiny import sample_inputs


def _observe_queries(layer, queries, gen):
    """What the attention reports after an update of ``queries`` tokens: each query's (random) attention over the
    window, causal."""
    width = layer.keys.shape[-2]
    visible = torch.ones(1, queries, width).tril(width - queries)
    layer.observe(torch.rand(1, 2, queries, width, generator=gen) * visible[:, None], visible)


def _filled_layer(tokens=100, window=16, block=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    keys, values = torch.randn(1, 2, tokens, 16, generator=gen), torch.randn(1, 2, tokens, 16, generator=gen)
    layer = MixedPrecisionLayer(window=window, block=block)
    layer.update(keys[:, :, :tokens - 2], values[:, :, :tokens - 2])
    layer.observe(torch.rand(1, 2, 5, tokens - 2, generator=gen), torch.ones(1, 5, tokens - 2))  # 5 probes
    for t in range(tokens - 2, tokens):  # decode steps pack the scored blocks
        layer.update(keys[:, :, t:t + 1], values[:, :, t:t + 1])
        _observe_queries(layer, 1, gen)
    out_k, out_v = layer.dequantized()
    return layer, keys, values, out_k, out_v


def test_blocks_are_packed_in_order_within_the_low_bit_error_and_the_window_is_exact():
    layer, keys, values, out_k, out_v = _filled_layer()
    assert layer.packed_tokens == 64 and layer.get_seq_length() == 100 and layer.keys.shape[-2] == 36
    assert torch.equal(out_k[:, :, 64:], keys[:, :, 64:]) and torch.equal(out_v[:, :, 64:], values[:, :, 64:])
    # every packed token is at worst at 2 bits: half a 2-bit step of its block's channel range (keys)
    for start in (0, 32):
        block = keys[:, :, start:start + 32]
        bound = quantize_keys(block, 2).step.float() / 2 + 1e-3
        assert ((out_k[:, :, start:start + 32] - block).abs() <= bound).all()
    assert (out_k[:, :, :64] - keys[:, :, :64]).abs().max() > 0  # really quantized
    high, low = layer.segments
    assert (high.bits, high.per_block, high.tokens) == (4, round(0.6 * 32), 2 * round(0.6 * 32))
    assert (low.bits, low.per_block, low.tokens) == (2, 32 - round(0.6 * 32), 64 - 2 * round(0.6 * 32))
    # each block's tokens are split between the two segments, every position once
    positions = torch.cat([high.positions, low.positions], dim=-1).sort(dim=-1).values
    assert torch.equal(positions, torch.arange(64, dtype=torch.int32).expand_as(positions))


def test_crop_then_continue_equals_never_having_drafted():
    """Drafted tokens, scored by their own queries and then cropped, leave no trace: the window, the scores and
    every later packing decision are those of never having drafted; a crop of part of a forward keeps the kept
    queries' scores."""
    drafted, keys, values, _, _ = _filled_layer(tokens=78)
    plain, _, _, _, _ = _filled_layer(tokens=78)
    gen = torch.Generator().manual_seed(5)
    for step in range(40):  # packs two more blocks on the way
        if step % 3 == 0:
            drafted.update(torch.randn(1, 2, 4, 16, generator=gen), torch.randn(1, 2, 4, 16, generator=gen))
            _observe_queries(drafted, 4, gen)
            drafted.crop(-4)
        assert torch.equal(drafted.score_sum, plain.score_sum) and torch.equal(drafted.score_count,
                                                                               plain.score_count)
        new_k, new_v = torch.randn(1, 2, 1, 16, generator=gen), torch.randn(1, 2, 1, 16, generator=gen)
        got, want = drafted.update(new_k, new_v), plain.update(new_k, new_v)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        scores = torch.rand(1, 2, 1, got[0].shape[-2], generator=gen)
        for layer in (drafted, plain):
            layer.observe(scores, torch.ones(1, 1, got[0].shape[-2]))
    assert drafted.packed_tokens == plain.packed_tokens == 96
    assert all(torch.equal(a, b) for a, b in zip(drafted.dequantized(), plain.dequantized(), strict=True))

    before = plain.score_sum.clone()
    plain.update(torch.randn(1, 2, 3, 16), torch.randn(1, 2, 3, 16))
    attention = torch.rand(1, 2, 3, plain.keys.shape[-2])
    plain.observe(attention, torch.ones(1, 3, plain.keys.shape[-2]))
    plain.crop(-2)  # one of the three accepted
    expected = torch.cat([before, torch.zeros(1, 2, 1)], dim=-1) + attention[:, :, 0, :before.shape[-1] + 1]
    torch.testing.assert_close(plain.score_sum, expected)
    with pytest.raises(ValueError, match="only the .* most recent are in full precision"):
        plain.crop(-90)


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


def test_attention_over_the_packed_cache_equals_attention_over_its_dequantized_copy(tiny):
    """The glue: masks split between packed segments and window (left padding reaches the packed tokens), the window
    returned by update, and the quantized attention, against the unpatched model reading a plain cache that holds
    the mixed cache's dequantized keys and values."""
    model, processor = tiny("llava")
    inputs = sample_inputs("llava", processor, batch_size=2, seed=1)
    assert not inputs["attention_mask"].all()  # padded
    reference = copy.deepcopy(model)
    accelerate(model, kv={"method": "mixed", "window": 8, "block": 16})
    try:
        with torch.no_grad():
            cache = DynamicCache(config=model.config.get_text_config())
            out = model(**inputs, cache=cache, use_cache=True)
            mask = inputs["attention_mask"]
            for _ in range(20):
                token = out.logits[:, -1:].argmax(-1)
                mask = torch.cat([mask, torch.ones_like(token)], dim=-1)
                out = model(input_ids=token, attention_mask=mask, cache=cache, use_cache=True)
                plain = DynamicCache(config=model.config.get_text_config())
                for index, layer in enumerate(cache.layers):  # the cache as this step read it, less its own token
                    plain.update(*(t[:, :, :-1] for t in layer.dequantized()), index)
                want = reference(input_ids=token, attention_mask=mask, cache=plain, use_cache=True).logits
                torch.testing.assert_close(out.logits, want, atol=1e-5, rtol=1e-4)
    finally:
        restore(model)
    assert all(layer.packed_tokens > 0 for layer in cache.layers)


def test_balanced_preset_packs_the_bundled_models_cache_at_least_four_times_smaller():
    """Issue 6's bar at default settings, on the bundled image model (float32): prune="dynamic" and kv="mixed"
    compose, and the cache after 32 new tokens is at most a quarter of the baseline's."""
    model, processor = load("shapes-image")
    inputs = _shapes_world_inputs("shapes-image", processor, batch_size=1, seed=3)
    kwargs = dict(max_new_tokens=32, min_new_tokens=32, do_sample=False, return_dict_in_generate=True)
    with torch.no_grad():
        base = model.generate(**inputs, **kwargs)
        accelerate(model, "balanced")
        try:
            assert [c.name for c in get_state(model).components] == ["prune", "kv"]
            mixed = model.generate(**inputs, **kwargs)
        finally:
            restore(model)
    assert tensor_bytes(base.cache) >= 4 * tensor_bytes(mixed.cache)


def test_generated_tokens_after_drafts_and_crops_are_those_of_never_having_drafted(tiny):
    """End to end on a model: every few steps three drafted tokens are verified in one forward and all rejected
    (cache.crop); the greedy tokens are the same as without drafting, while blocks keep being packed."""
    model, processor = tiny("llava")
    inputs = sample_inputs("llava", processor, batch_size=1, seed=2)
    accelerate(model, kv={"method": "mixed", "window": 8, "block": 16})

    def greedy(draft: bool) -> tuple[list[int], DynamicCache]:
        cache = DynamicCache(config=model.config.get_text_config())
        token = model(**inputs, cache=cache, use_cache=True).logits[:, -1:].argmax(-1)
        tokens = []
        for step in range(40):
            if draft and step % 4 == 1:
                model(input_ids=torch.tensor([[7, 8, 9]]), cache=cache, use_cache=True)
                cache.crop(-3)
            tokens.append(int(token))
            token = model(input_ids=token, cache=cache, use_cache=True).logits[:, -1:].argmax(-1)
        return tokens, cache

    try:
        with torch.no_grad():
            plain, plain_cache = greedy(draft=False)
            drafted, drafted_cache = greedy(draft=True)
    finally:
        restore(model)
    assert drafted == plain
    assert drafted_cache.layers[0].packed_tokens == plain_cache.layers[0].packed_tokens > 32
