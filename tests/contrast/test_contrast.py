"""Contrastive decoding: the combiner, the branches, and generate end to end on every tiny family."""

import math

import pytest
import torch

from mmaccel import ConfigError, accelerate, restore
from mmaccel.contrast.branches import diffusion_noise, vcd_inputs, without_media
from mmaccel.contrast.decoding import ContrastiveLogitsProcessor, ContrastStats
from mmaccel.patch import get_state
from mmaccel.zoo.tiny import sample_inputs, tiny_families


class _FixedBranch(ContrastiveLogitsProcessor):
    """The combiner with a contrast branch that returns given logits and counts what it was fed."""

    def __init__(self, contrast, **kwargs):
        super().__init__(model=None, branch_inputs={}, prompt_length=2, stats=ContrastStats(), **kwargs)
        self.contrast, self.fed_lengths = contrast, []

    def _branch_logits(self, generated):
        self.fed_lengths.append(generated.shape[1] - self.fed)
        self.fed = generated.shape[1]
        return self.contrast


def test_combination_and_plausibility_constraint_by_hand():
    original = torch.tensor([[2.0, 1.0, 0.0, -5.0]])
    contrast = torch.tensor([[2.0, -1.0, 0.0, -9.0]])
    processor = _FixedBranch(contrast, alpha=1.0, beta=0.1, entropy_threshold=0.0)
    out = processor(torch.tensor([[7, 7]]), original.clone())
    # (1 + 1) * l_o - 1 * l_c, kept where l_o >= max l_o + log 0.1 = -0.303: token 3 (logit -5) is cut
    expected = torch.tensor([[2.0, 3.0, 0.0, float("-inf")]])
    assert torch.equal(out, expected)
    assert -5.0 < 2.0 + math.log(0.1) < 0.0


def test_confident_steps_skip_the_branch_which_later_catches_up_in_one_forward():
    contrast = torch.zeros(1, 4)
    processor = _FixedBranch(contrast, alpha=1.0, beta=0.1, entropy_threshold=0.5)
    confident = torch.tensor([[20.0, 0.0, 0.0, 0.0]])
    uncertain = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert torch.equal(processor(torch.tensor([[7, 7]]), confident.clone()), confident)
    assert torch.equal(processor(torch.tensor([[7, 7, 3]]), confident.clone()), confident)
    processor(torch.tensor([[7, 7, 3, 4, 5]]), uncertain.clone())
    assert processor.fed_lengths == [3] and processor.stats.contrasted == 1 and processor.stats.steps == 3
    zero = _FixedBranch(contrast, alpha=0.0, beta=0.1, entropy_threshold=0.0)
    assert torch.equal(zero(torch.tensor([[7, 7]]), uncertain.clone()), uncertain) and zero.fed_lengths == []


def test_branches():
    pixels = torch.ones(2, 3, 4, 4)
    assert torch.equal(diffusion_noise(pixels, 500, seed=1), diffusion_noise(pixels, 500, seed=1))
    assert (diffusion_noise(pixels, 999) - pixels).abs().mean() > (diffusion_noise(pixels, 10) - pixels).abs().mean()
    with pytest.raises(ValueError, match="noise_step=1000 must lie in 0..999"):
        diffusion_noise(pixels, 1000)
    noised = vcd_inputs({"input_ids": torch.tensor([[1, 2]]), "pixel_values": pixels}, 500)
    assert torch.equal(noised["input_ids"], torch.tensor([[1, 2]])) and not torch.equal(noised["pixel_values"],
                                                                                       pixels)
    dropped = without_media({"input_ids": torch.tensor([[1, 9, 9, 2]]), "attention_mask": torch.ones(1, 4),
                             "pixel_values": pixels}, {9})
    assert dropped["input_ids"].tolist() == [[1, 2]] and set(dropped) == {"input_ids", "attention_mask"}
    with pytest.raises(ValueError, match="supports batch 1"):
        without_media({"input_ids": torch.ones(2, 3, dtype=torch.long)}, {9})


@pytest.mark.parametrize("family", tiny_families())
@pytest.mark.parametrize("method", ["vcd", "avisc", "code", "no_image", "mask_visual"])
def test_every_family_runs_and_alpha_zero_is_plain_decoding(tiny, family, method):
    model, processor = tiny(family)
    inputs = sample_inputs(family, processor, batch_size=1, seed=2)
    kwargs = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False)
    with torch.no_grad():
        plain = model.generate(**inputs, **kwargs)
        try:
            accelerate(model, contrast={"method": method, "alpha": 0.0}, processor=processor)
            assert torch.equal(model.generate(**inputs, **kwargs), plain)
            accelerate(model, contrast={"method": method, "description_tokens": 5}, processor=processor)
            contrasted = model.generate(**inputs, **kwargs)
            cost = get_state(model).components[0].cost()
        finally:
            restore(model)
        again = model.generate(**inputs, **kwargs)  # the branch left no trace (M-RoPE offsets included)
    assert contrasted.shape == plain.shape and cost["contrasted"] == 6 and cost["branch_tokens"] > 5
    assert torch.equal(again, plain) and "generate" not in model.__dict__
    assert (cost["blind_tokens"] > 0) == (method == "avisc")
    assert cost["descriptions"] == (method == "code")  # one description, cached for the second call
    assert model.config.get_text_config()._attn_implementation != "mmaccel" or method != "avisc"


def test_combinations_not_supported_yet_are_refused(tiny):
    model, _ = tiny("llava")
    with pytest.raises(ConfigError, match="does not combine with spec or kv yet"):
        accelerate(model, contrast="vcd", spec="prompt_lookup")


@pytest.mark.parametrize("family", tiny_families())
@pytest.mark.parametrize("method", ["vcd", "avisc", "mask_visual"])
def test_a_branch_decoded_as_a_second_row_gives_the_unbatched_logits(tiny, family, method):
    model, processor = tiny(family)
    inputs = sample_inputs(family, processor, batch_size=1, seed=4)
    kwargs = dict(max_new_tokens=5, min_new_tokens=5, do_sample=False, return_dict_in_generate=True,
                  output_scores=True)  # the combined scores: they hold the branch's logits
    outputs, costs = {}, {}
    with torch.no_grad():
        try:
            for batched in (False, True):
                accelerate(model, contrast={"method": method, "batched": batched})
                outputs[batched] = model.generate(**inputs, **kwargs)
                costs[batched] = get_state(model).components[0].cost()
        finally:
            restore(model)
    assert costs[True]["joined"] == 1 and costs[False]["joined"] == 0
    # joined after the first step: the unbatched branch read 4 more single tokens
    assert costs[False]["branch_tokens"] - costs[True]["branch_tokens"] == 4
    assert torch.equal(outputs[True].sequences, outputs[False].sequences)
    for batched_step, step in zip(outputs[True].scores, outputs[False].scores, strict=True):
        assert torch.equal(torch.isinf(batched_step), torch.isinf(step))
        finite = torch.isfinite(step)
        assert torch.allclose(batched_step[finite], step[finite], atol=1e-4, rtol=1e-4)
    cache = outputs[True].past_key_values if hasattr(outputs[True], "past_key_values") else outputs[True].cache
    assert cache.layers[0].keys.shape[0] == 1  # the second row left the caller's cache


@pytest.mark.parametrize("family", tiny_families())
@pytest.mark.parametrize("batched", [False, True])
def test_a_branch_that_sees_the_real_input_gives_the_plain_logits(tiny, family, batched):
    """AvisC with every visual token blind (lambda = -10) contrasts the prompt with itself: the branch's logits
    are the model's own, at the prefill and every step after (positions, M-RoPE offsets and caches included), so
    ``(1 + a) l - a l = l`` wherever the plausibility cut keeps a token."""
    model, processor = tiny(family)
    inputs = sample_inputs(family, processor, batch_size=1, seed=5)
    kwargs = dict(max_new_tokens=5, min_new_tokens=5, do_sample=False, return_dict_in_generate=True)
    with torch.no_grad():
        plain = model.generate(**inputs, **kwargs, output_logits=True)
        try:
            accelerate(model, contrast={"method": "avisc", "blind_lambda": -10.0, "batched": batched})
            contrasted = model.generate(**inputs, **kwargs, output_scores=True)
        finally:
            restore(model)
    assert torch.equal(contrasted.sequences, plain.sequences)
    for combined, logits in zip(contrasted.scores, plain.logits, strict=True):
        kept = torch.isfinite(combined)
        assert kept.any() and torch.allclose(combined[kept], logits[kept], atol=1e-4)
