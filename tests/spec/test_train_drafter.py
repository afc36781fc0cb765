"""The small-drafter trainer: the target cut to its first layers, distilled, saved as a drafter that
``spec="draft_model"`` finds inside the model's folder."""

import pytest
import torch

from mmaccel import ConfigError, accelerate, restore
from mmaccel.spec.draft_model import DRAFTER_FOLDER, default_drafter
from mmaccel.spec.train_drafter import agreement, answered_prompts, train, truncated_copy
from mmaccel.zoo.tiny import sample_inputs

KWARGS = dict(max_new_tokens=10, min_new_tokens=10, do_sample=False)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_a_cut_copy_keeps_the_first_layers_and_saves_and_loads(tiny, tmp_path, family):
    model, processor = tiny(family)
    inputs = sample_inputs(family, processor, batch_size=1, seed=1)
    with torch.no_grad():
        full_depth = truncated_copy(model, model.config.get_text_config().num_hidden_layers)
        assert torch.equal(full_depth(**inputs).logits, model(**inputs).logits)
        cut = truncated_copy(model, 1)
        assert cut.config.get_text_config().num_hidden_layers == 1
        assert model.config.get_text_config().num_hidden_layers == 2
        kept = {k for k in model.state_dict() if "language_model.layers.1." not in k}
        assert set(cut.state_dict()) == kept
        cut.save_pretrained(tmp_path)
        loaded = type(model).from_pretrained(tmp_path)
        assert torch.equal(loaded(**inputs).logits, cut(**inputs).logits)
        assert not torch.equal(cut(**inputs).logits, model(**inputs).logits)
    with pytest.raises(ValueError, match="1 to 2"):
        truncated_copy(model, 3)


def test_distillation_fits_the_models_answers_and_the_saved_drafter_is_the_models_default(tiny, tmp_path):
    model, processor = tiny("llava")
    prompts = [sample_inputs("llava", processor, batch_size=1, seed=seed) for seed in range(4)]
    data = answered_prompts(model, prompts, new_tokens=12)
    assert all(d["input_ids"].shape[1] == p["input_ids"].shape[1] + 12 for d, p in zip(data, prompts, strict=True))
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    summary = train(model, processor, folder / DRAFTER_FOLDER, data, data, layers=1, steps=60, lr=3e-3, seed=0)
    assert summary["held_out_agreement"] > summary["held_out_agreement_before"]
    assert summary["held_out_agreement"] > 0.5

    saved = type(model).from_pretrained(folder).eval()
    assert default_drafter(saved) == str(folder / DRAFTER_FOLDER)
    drafter = type(model).from_pretrained(folder / DRAFTER_FOLDER).eval()
    assert agreement(drafter, data) == summary["held_out_agreement"]
    with torch.no_grad():
        plain = [saved.generate(**p, **KWARGS) for p in prompts]
        accelerate(saved, spec="draft_model")  # no drafter named: the one in the model's folder
        try:
            drafted = [saved.generate(**p, **KWARGS) for p in prompts]
        finally:
            restore(saved)
    assert all(torch.equal(a, b) for a, b in zip(plain, drafted, strict=True))


def test_a_half_precision_model_gets_a_drafter_trained_in_float32_and_saved_in_its_dtype(tmp_path):
    from mmaccel.zoo.tiny import build_tiny

    model, processor = build_tiny("qwen2_vl", seed=0, dtype=torch.bfloat16)
    data = answered_prompts(model, [sample_inputs("qwen2_vl", processor, batch_size=1, seed=0)], new_tokens=4)
    train(model, processor, tmp_path, data, data, layers=1, steps=2, lr=1e-3, seed=0)
    drafter = type(model).from_pretrained(tmp_path)
    assert {p.dtype for p in drafter.parameters()} == {torch.bfloat16}
    assert next(model.parameters()).dtype == torch.bfloat16


def test_without_a_drafter_in_its_folder_the_error_says_how_to_make_one(tiny):
    model, _ = tiny("llava")
    assert default_drafter(model) == ""
    with pytest.raises(ConfigError, match="spec.train_drafter"):
        accelerate(model, spec="draft_model")
