"""Dynamic sparse prefill: lossless at tau = 1 for every family, sparse and measurable on the bundled model."""

import pytest
import torch

from mmaccel import accelerate, restore
from mmaccel.attention import SPARSE_ATTR
from mmaccel.bench import visual_token_counts
from mmaccel.patch import get_state
from mmaccel.zoo import load
from mmaccel.zoo.tiny import sample_inputs, tiny_families


@pytest.mark.parametrize("family", tiny_families())
def test_tau_one_is_token_identical_to_the_unpatched_model(tiny, family):
    model, processor = tiny(family)
    inputs = sample_inputs(family, processor, batch_size=2, seed=1)  # left-padded rows of different lengths
    with torch.no_grad():
        expected = model.generate(**inputs, max_new_tokens=8, do_sample=False)
        accelerate(model, prune={"method": "dynamic", "tau": 1.0})
        try:
            got = model.generate(**inputs, max_new_tokens=8, do_sample=False)
            scores = get_state(model).components[0].scores
        finally:
            restore(model)
    assert torch.equal(got, expected)
    assert scores, "the sparse layers ran"


def test_balanced_keeps_fewer_visual_tokens_on_the_bundled_model_and_restores():
    model, processor = load("shapes-image")
    from mmaccel.bench import _shapes_world_inputs

    inputs = _shapes_world_inputs("shapes-image", processor, batch_size=1, seed=3)
    with torch.no_grad():
        accelerate(model, prune={"method": "dynamic", "tau": 0.5})
        try:
            model.generate(**inputs, max_new_tokens=4, do_sample=False)
            component = get_state(model).components[0]
            visual, kept = visual_token_counts(model, inputs)
            layers = sorted(component.scores)
            seq_len = inputs["input_ids"].shape[1]
            kv_heads = model.config.text_config.num_key_value_heads
            assert layers == list(range(1, model.config.text_config.num_hidden_layers))  # the first stays dense
            assert all(component.scores[layer].shape == (1, kv_heads, seq_len) for layer in layers)
            assert all(int(component.kept_visual[layer].max()) < visual for layer in layers)
            assert kept < visual
        finally:
            restore(model)
    assert not any(SPARSE_ATTR in m.__dict__ for m in model.modules())
    assert model.config.text_config._attn_implementation != "mmaccel"
