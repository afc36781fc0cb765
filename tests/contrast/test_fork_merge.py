"""Fork-merge and the audio/visual contrasts on the audio-visual tiny family."""

import pytest
import torch

from mmaccel import ConfigError, accelerate, restore
from mmaccel.contrast.blind import only_tokens_kept
from mmaccel.patch import get_adapter, get_state
from mmaccel.zoo.tiny.qwen2_5_omni import sample_audio_video_inputs

FAMILY = "qwen2_5_omni_thinker"
KWARGS = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False)


def _component(model):
    return get_state(model).components[0]


@pytest.mark.parametrize("method", ["fork_merge", "mask_audio", "mask_visual"])
def test_audio_visual_strategies_run_and_alpha_zero_is_plain_decoding(tiny, method):
    model, processor = tiny(FAMILY)
    inputs = sample_audio_video_inputs(processor, seed=1)
    with torch.no_grad():
        plain = model.generate(**inputs, **KWARGS)
        try:
            accelerate(model, contrast={"method": method, "alpha": 0.0})
            assert torch.equal(model.generate(**inputs, **KWARGS), plain)
            accelerate(model, contrast={"method": method, "fork_layers": 1})
            out = model.generate(**inputs, **KWARGS)
            cost = _component(model).cost()
        finally:
            restore(model)
        again = model.generate(**inputs, **KWARGS)
    assert out.shape == plain.shape and torch.equal(again, plain)
    assert cost["forked"] == (method == "fork_merge")
    assert (cost["contrasted"] == 6) == (method != "fork_merge")


LOGITS = dict(KWARGS, return_dict_in_generate=True, output_logits=True)


def _logits(out):
    return torch.stack(out.logits, dim=1)


def _zeroed_audio_generate(model, inputs):
    adapter = get_adapter(model)
    keep = ~adapter.audio_token_mask(inputs["input_ids"])
    with only_tokens_kept(adapter.language_model, keep):
        return model.generate(**inputs, **LOGITS)


def test_a_merge_that_takes_only_the_visual_branch_is_the_model_without_its_audio(tiny):
    """With merge weights (1, 0) every layer after the fork reads the visual branch, whose forked layers saw the
    audio zeroed — the model run on the audio-zeroed prompt, prefill and every decode step (the forked layers'
    cache rows stay apart)."""
    model, processor = tiny(FAMILY)
    inputs = sample_audio_video_inputs(processor, seed=2)
    with torch.no_grad():
        expected = _zeroed_audio_generate(model, inputs)
        plain = model.generate(**inputs, **LOGITS)
        try:
            accelerate(model, contrast={"method": "fork_merge", "fork_layers": 1})
            fork = _component(model)._fork
            fork.fixed_weights = (1.0, 0.0)
            taken = model.generate(**inputs, **LOGITS)
            fork.fixed_weights = None
            merged = model.generate(**inputs, **LOGITS)
            weights = fork.weights
        finally:
            restore(model)
    assert torch.equal(taken.sequences, expected.sequences)
    assert torch.allclose(_logits(taken), _logits(expected), atol=1e-5)
    # the audio moves this model's logits, so the check above can fail
    assert not torch.allclose(_logits(plain), _logits(expected), atol=1e-3)
    assert weights is not None and 0 < weights[0] < 1 and weights[0] + weights[1] == pytest.approx(1)
    assert not torch.allclose(_logits(merged), _logits(expected), atol=1e-3)


def test_audio_strategies_need_an_audio_family_and_both_modalities(tiny):
    model, processor = tiny("llava")
    for method in ("fork_merge", "mask_audio"):
        with pytest.raises(ConfigError, match="needs an audio-visual model"):
            accelerate(model, contrast=method)
    omni, omni_processor = tiny(FAMILY)
    from mmaccel.zoo.tiny import sample_inputs

    video_only = sample_inputs(FAMILY, omni_processor, modality="video", seed=1)
    try:
        accelerate(omni, contrast="fork_merge")
        with pytest.raises(ValueError, match="needs a prompt with both audio and visual"):
            omni.generate(**video_only, **KWARGS)
    finally:
        restore(omni)


def test_a_partial_merge_keeps_the_joint_prompt_as_a_third_row(tiny):
    model, processor = tiny(FAMILY)
    inputs = sample_audio_video_inputs(processor, seed=3)
    rows = []
    with torch.no_grad():
        try:
            accelerate(model, contrast={"method": "fork_merge", "fork_layers": 1, "alpha": 0.5})
            layer = get_adapter(model).decoder_layers[0]
            handle = layer.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
            out = model.generate(**inputs, **LOGITS)
            handle.remove()
        finally:
            restore(model)
    assert out.sequences.shape[1] == inputs["input_ids"].shape[1] + 6
    assert set(rows) == {3}  # joint, visual and audio rows at the prefill and every step
