"""CODE's contrast branch: the description prompt is the processor's own, the description replaces the media."""

import pytest
import torch

from mmaccel import ConfigError, accelerate, restore
from mmaccel.contrast.decoding import ContrastiveLogitsProcessor, ContrastStats, bounded_divergence
from mmaccel.contrast.description import SelfDescription
from mmaccel.patch import get_state
from mmaccel.zoo.tiny import common, family_modalities, sample_inputs, tiny_families

CASES = [(family, modality) for family in tiny_families() for modality in family_modalities(family)]


@pytest.mark.parametrize(("family", "modality"), CASES)
def test_description_prompt_is_what_the_processor_writes(tiny, monkeypatch, family, modality):
    _, processor = tiny(family)
    question = sample_inputs(family, processor, modality=modality, seed=3)
    monkeypatch.setattr(common, "QUESTIONS", (f"Describe the {modality}.",))
    expected = sample_inputs(family, processor, modality=modality, seed=3)
    built = SelfDescription(processor).description_inputs(dict(question))
    assert set(built) == set(expected)
    for key, value in expected.items():
        assert torch.equal(built[key], value), key


def test_contrast_input_puts_the_description_where_the_media_were(tiny):
    _, processor = tiny("qwen2_vl")
    inputs = sample_inputs("qwen2_vl", processor, seed=1)
    describer = SelfDescription(processor)
    ids = inputs["input_ids"][0]
    first, last, kind = describer.media_span(ids)
    assert kind == "image" and (ids[first:last + 1] == processor.image_token_id).all()
    branch = describer.contrast_inputs(inputs, [11, 12, 13])
    assert set(branch) == {"input_ids", "attention_mask"}
    assert branch["input_ids"][0].tolist() == ids[:first].tolist() + [11, 12, 13] + ids[last + 1:].tolist()
    assert branch["attention_mask"].shape == branch["input_ids"].shape
    with pytest.raises(ValueError, match="holds no image, video or audio token"):
        describer.media_span(ids[:first])


def test_descriptions_stop_at_the_end_token_and_are_cached_per_media(tiny):
    _, processor = tiny("llava")
    eos = processor.tokenizer.eos_token_id
    calls = []

    def generate(**prompt):
        calls.append(prompt)
        length = prompt["input_ids"].shape[1]
        return torch.cat([prompt["input_ids"], torch.tensor([[5, 6, eos, 7]])], dim=1)[:, :length + 4]

    describer = SelfDescription(processor, max_tokens=4)
    first = sample_inputs("llava", processor, seed=1)
    assert describer.describe(generate, first) == [5, 6]
    assert describer.describe(generate, sample_inputs("llava", processor, seed=1)) == [5, 6]
    assert len(calls) == 1 and calls[0]["max_new_tokens"] == 4 and calls[0]["do_sample"] is False
    describer.describe(generate, sample_inputs("llava", processor, seed=2))  # another image: described anew
    assert len(calls) == 2 and describer.generated == 2
    with pytest.raises(ValueError, match="supports batch 1"):
        describer.describe(generate, sample_inputs("llava", processor, batch_size=2, seed=1))


def test_bounded_divergence_by_hand():
    same = torch.tensor([[0.5, 0.5]])
    assert bounded_divergence(same, same, 0.7).item() == 0.0
    assert bounded_divergence(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), 0.7).item() == 1.0
    # p = (0.75, 0.25), q = (0.25, 0.75): |p - q| = 0.5 everywhere, so D = log2(0.5^a + 1)
    d = bounded_divergence(torch.tensor([[0.75, 0.25]]), torch.tensor([[0.25, 0.75]]), 0.7).item()
    assert d == pytest.approx(torch.log2(torch.tensor(0.5 ** 0.7 + 1)).item())


class _FixedBranch(ContrastiveLogitsProcessor):
    def __init__(self, contrast, **kwargs):
        super().__init__(model=None, branch_inputs={}, prompt_length=1, stats=ContrastStats(), beta=0.5,
                         entropy_threshold=0.0, **kwargs)
        self.contrast = contrast

    def _branch_logits(self, generated):
        return self.contrast


def test_code_strength_and_cutoff_follow_the_divergence():
    original = torch.tensor([[2.0, 1.0, 0.0, -3.0]])
    contrast = torch.tensor([[1.8, 1.2, 0.0, -3.0]])
    out = _FixedBranch(contrast, alpha=1.0, code_exponent=0.7)(torch.tensor([[1]]), original.clone())
    p, q = original.softmax(-1), contrast.softmax(-1)
    d = bounded_divergence(p, q, 0.7)
    alpha = 1 - d
    expected = (1 + alpha) * original - alpha * contrast
    kept = p >= d * p.max()  # the cutoff is D * max p (D = 0.21), not beta = 0.5, which would keep one token
    assert 0 < d.item() < 0.5 and kept.sum() == 2
    assert torch.allclose(out[kept], expected[kept]) and torch.isinf(out[~kept]).all()


def test_code_needs_the_processor(tiny):
    model, _ = tiny("llava")
    with pytest.raises(ConfigError, match="needs the model's processor"):
        accelerate(model, contrast="code")


def test_descriptions_outlive_a_reconfiguration_of_the_same_model(tiny):
    model, processor = tiny("llava")
    inputs = sample_inputs("llava", processor, seed=6)
    kwargs = dict(max_new_tokens=3, do_sample=False)
    try:
        accelerate(model, contrast={"method": "code", "description_tokens": 4}, processor=processor)
        first = model.generate(**inputs, **kwargs)
        accelerate(model, contrast={"method": "code", "description_tokens": 4}, processor=processor)
        second = model.generate(**inputs, **kwargs)
        cost = get_state(model).components[0].cost()
        accelerate(model, contrast={"method": "code", "description_tokens": 5}, processor=processor)
        model.generate(**inputs, **kwargs)
        longer = get_state(model).components[0].cost()
    finally:
        restore(model)
    assert torch.equal(first, second) and cost["descriptions"] == 0  # read from the model's cache
    assert longer["descriptions"] == 1  # another description length is another description
