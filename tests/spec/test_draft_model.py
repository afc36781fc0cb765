"""A smaller model of the same family as the drafter: lossless on every family, and it sees the media."""

import copy

import pytest
import torch

from mmaccel import ConfigError, accelerate, restore
from mmaccel.patch import get_state
from mmaccel.zoo.tiny import sample_inputs, tiny_families

KWARGS = dict(max_new_tokens=10, min_new_tokens=10, do_sample=False)


def _plain_and_drafted(model, prompts, drafter, **kwargs):
    """Each prompt's greedy output without and with ``drafter``, and the acceptance statistics."""
    with torch.no_grad():
        plain = [model.generate(**p, **kwargs) for p in prompts]
        try:
            accelerate(model, spec={"method": "draft_model", "num_tokens": 4}, drafter=drafter)
            drafted = [model.generate(**p, **kwargs) for p in prompts]
            stats = get_state(model).components[0].acceptance()
        finally:
            restore(model)
    for expected, got in zip(plain, drafted, strict=True):
        assert torch.equal(expected, got)
    return stats


@pytest.mark.parametrize("family", tiny_families())
def test_greedy_output_is_the_models_with_a_smaller_drafter(tiny, smaller_tiny, family):
    model, processor = tiny(family)
    prompts = [sample_inputs(family, processor, batch_size=1, seed=seed) for seed in range(6)]
    assert _plain_and_drafted(model, prompts, smaller_tiny(family), **KWARGS)["steps"] > 0


@pytest.mark.parametrize("family", ["llava_next", "qwen2_vl", "qwen2_5_omni_thinker"])
def test_a_drafter_with_the_models_weights_sees_what_it_sees(tiny, family):
    """The model's own copy (with a padded vocabulary) as the drafter: every draft is accepted, which needs the
    media, the prompt's positions (M-RoPE too) and the cache bookkeeping to be exactly the model's."""
    model, processor = tiny(family)
    drafter = copy.deepcopy(model)
    drafter.resize_token_embeddings(model.config.get_text_config().vocab_size + 64, mean_resizing=False)
    prompts = [sample_inputs(family, processor, batch_size=1, seed=seed) for seed in range(3)]
    stats = _plain_and_drafted(model, prompts, drafter, **dict(KWARGS, max_new_tokens=12, min_new_tokens=12))
    assert stats["accepted"] > 0 and stats["acceptance_rate"] == 1.0


def test_a_drafter_is_required_and_of_the_same_family(tiny):
    model, _ = tiny("llava")
    with pytest.raises(ConfigError, match="needs a drafter"):
        accelerate(model, spec="draft_model")
    other, _ = tiny("qwen2_vl")
    with pytest.raises(ConfigError, match="must be of the model's family"):
        accelerate(model, spec="draft_model", drafter=other)
