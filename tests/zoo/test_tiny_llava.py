"""Tiny LLaVA-family models: real classes and processors, deterministic in the seed, generate works offline."""

import pytest
import torch

from mmaccel.zoo.tiny import build_tiny, family_modalities, sample_inputs

FAMILIES = ["llava", "llava_next", "llava_next_video", "llava_onevision"]


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_weights_and_inputs(family):
    model_a, processor = build_tiny(family, seed=3)
    model_b, _ = build_tiny(family, seed=3)
    model_c, _ = build_tiny(family, seed=4)
    inputs = sample_inputs(family, processor, batch_size=2, seed=1)
    assert torch.equal(inputs["input_ids"], sample_inputs(family, processor, batch_size=2, seed=1)["input_ids"])
    with torch.no_grad():
        logits = [m(**inputs).logits for m in (model_a, model_b, model_c)]
    assert torch.equal(logits[0], logits[1])
    assert not torch.equal(logits[0], logits[2])


@pytest.mark.parametrize("family", FAMILIES)
def test_real_processor_and_generate_for_every_modality(tiny, family):
    model, processor = tiny(family)
    assert type(processor).__name__.startswith(type(model).__name__.split("For")[0])
    assert processor.tokenizer.padding_side == "left"
    for modality in family_modalities(family):
        for batch in (1, 2):
            inputs = sample_inputs(family, processor, batch_size=batch, modality=modality)
            with torch.no_grad():
                out = model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False)
            assert out.shape == (batch, inputs["input_ids"].shape[1] + 3)
        if batch == 2:
            assert (inputs["attention_mask"][:, 0] == 0).any(), "rows of a batch differ in length: left padding"


def test_bfloat16_build():
    model, _ = build_tiny("llava", dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
