"""Random-weight models with real checkpoint shapes: the right sizes, the real processor's token count."""

import pytest
import torch

from mmaccel.bench import bench_inputs
from mmaccel.models import ModelLoadError, load_model
from mmaccel.zoo.random_weights import build_random, shape_names


def test_llava_1_5_7b_has_the_real_shapes_and_576_visual_tokens():
    model, processor = build_random("llava-1.5-7b", device="meta")
    params = sum(p.numel() for p in model.parameters())
    assert 7.0e9 < params < 7.1e9  # LLaVA-1.5-7B: 7.06 B parameters
    text = model.config.text_config
    assert (text.num_hidden_layers, text.hidden_size, text.num_attention_heads) == (32, 4096, 32)
    (inputs,) = bench_inputs("random-llava-1.5-7b", processor, num_samples=1, batch_size=2, modality="image",
                             seed=0)
    counts = (inputs["input_ids"] == model.config.image_token_id).sum(-1)
    assert counts.tolist() == [576, 576]
    assert inputs["pixel_values"].shape[-2:] == torch.Size([336, 336])


def test_all_shapes_build_on_meta():
    for name in shape_names():
        model, _ = build_random(name, device="meta")
        assert model.config.model_type == "llava"


def test_unknown_random_model_lists_the_available_ones():
    with pytest.raises(ModelLoadError, match="random-llava-1.5-7b"):
        load_model("random-gpt-5")
