"""Tiny LLaVA-family models: real classes and processors, tiny sizes, deterministic in the seed, generate works
offline for every modality without warnings."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
import transformers

from mmaccel.adapters import get_adapter
from mmaccel.zoo.tiny import build_tiny, family_modalities, sample_inputs

FAMILIES = ["llava", "llava_next", "llava_next_video", "llava_onevision"]
CLASSES = {  # family -> (model, config, processor, image processor, video processor)
    "llava": ("LlavaForConditionalGeneration", "LlavaConfig", "LlavaProcessor", "CLIPImageProcessor", None),
    "llava_next": ("LlavaNextForConditionalGeneration", "LlavaNextConfig", "LlavaNextProcessor",
                   "LlavaNextImageProcessor", None),
    "llava_next_video": ("LlavaNextVideoForConditionalGeneration", "LlavaNextVideoConfig", "LlavaNextVideoProcessor",
                         "LlavaNextImageProcessor", "LlavaNextVideoVideoProcessor"),
    "llava_onevision": ("LlavaOnevisionForConditionalGeneration", "LlavaOnevisionConfig", "LlavaOnevisionProcessor",
                        "LlavaOnevisionImageProcessor", "LlavaOnevisionVideoProcessor"),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_real_classes_sizes_and_token_ids(tiny, family):
    """The family's real model/config/processor classes, tiny sizes, special ids agreeing everywhere."""
    model, processor = tiny(family)
    model_cls, config_cls, processor_cls, image_cls, video_cls = CLASSES[family]
    assert model.config.model_type == family and not model.training
    assert type(model).__name__ == model_cls and type(model.config).__name__ == config_cls
    assert type(processor).__name__ == processor_cls
    assert type(processor.image_processor).__name__.removesuffix("Fast") == image_cls
    assert (type(getattr(processor, "video_processor", None)).__name__ if video_cls else None) == video_cls
    assert type(model.model.vision_tower).__name__ == ("SiglipVisionModel" if family == "llava_onevision"
                                                        else "CLIPVisionModel")
    text = model.config.text_config
    attention = model.model.language_model.layers[0].self_attn
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads) == \
        (64, 2, 4, 2)
    assert attention.head_dim == 16
    tokenizer = processor.tokenizer
    assert text.vocab_size == len(tokenizer) == model.get_input_embeddings().num_embeddings
    assert model.config.image_token_id == tokenizer.image_token_id == processor.image_token_id
    if "video" in family_modalities(family):
        assert model.config.video_token_id == tokenizer.video_token_id == processor.video_token_id
    assert tokenizer.padding_side == "left" and tokenizer.pad_token_id is not None
    generation = model.generation_config
    assert (generation.pad_token_id, generation.eos_token_id, generation.bos_token_id) == \
        (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id)


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_weights_and_inputs(family):
    """Same seed: identical logits and inputs; another seed: different weights and media."""
    model_a, processor = build_tiny(family, seed=3)
    model_b, _ = build_tiny(family, seed=3)
    model_c, _ = build_tiny(family, seed=4)
    inputs = sample_inputs(family, processor, batch_size=2, seed=1)
    again = sample_inputs(family, processor, batch_size=2, seed=1)
    other = sample_inputs(family, processor, batch_size=2, seed=2)
    pixels = "pixel_values" if "pixel_values" in inputs else "pixel_values_videos"
    assert all(torch.equal(inputs[k], again[k]) for k in inputs)
    assert not torch.equal(inputs[pixels], other[pixels])
    with torch.no_grad():
        logits = [m(**inputs).logits for m in (model_a, model_b, model_c)]
    assert torch.equal(logits[0], logits[1])
    assert not torch.equal(logits[0], logits[2])


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_every_modality_without_warnings(tiny, family):
    """``generate(max_new_tokens=4)`` for batch 1 and left-padded batch 2 of every modality, warning nothing."""
    model, processor = tiny(family)
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for modality in family_modalities(family):
                for batch in (1, 2):
                    inputs = sample_inputs(family, processor, batch_size=batch, modality=modality)
                    if batch == 2:
                        assert (inputs["attention_mask"][:, 0] == 0).any(), "rows differ in length: left padding"
                    with torch.no_grad():
                        out = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
                    assert out.shape == (batch, inputs["input_ids"].shape[1] + 4)
                    assert torch.equal(out[:, : inputs["input_ids"].shape[1]], inputs["input_ids"])
    finally:
        logger.removeHandler(handler)
    assert not [r.getMessage() for r in records]
    assert not [str(w.message) for w in caught if "transformers" in w.filename]


@pytest.mark.parametrize("family", ["llava_next", "llava_next_video", "llava_onevision"])
def test_anyres_images_of_two_shapes_in_one_batch(tiny, family):
    """Anyres families tile differently shaped images differently: the two rows get different token counts."""
    model, processor = tiny(family)
    inputs = sample_inputs(family, processor, batch_size=2, modality="image", seed=0)
    assert inputs["image_sizes"].tolist() == [[20, 40], [24, 24]]
    layout = get_adapter(model).token_layout(**inputs)
    assert layout.images(0)[0].length != layout.images(1)[0].length
    assert min(layout.images(0)[0].length, layout.images(1)[0].length) >= 2


@pytest.mark.parametrize("family", ["llava_next_video", "llava_onevision"])
def test_video_inputs_have_several_frames(tiny, family):
    """Sample videos have 4 frames a row, stacked by the real video processor."""
    _, processor = tiny(family)
    inputs = sample_inputs(family, processor, batch_size=2, modality="video", seed=0)
    assert tuple(inputs["pixel_values_videos"].shape[:3]) == (2, 4, 3)


def test_chat_templates_render_placeholders():
    """Vicuna-style templates put each placeholder on its own line; OneVision's renders images back to back."""
    _, llava = build_tiny("llava")
    _, onevision = build_tiny("llava_onevision")
    content = [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Hi?"}]
    messages = [{"role": "user", "content": content}]
    assert llava.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == \
        "USER: <image>\n<image>\nHi? ASSISTANT:"
    assert onevision.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == \
        "<|im_start|>user <image><image>\nHi?<|im_end|><|im_start|>assistant\n"


def test_unknown_modality_is_refused(tiny):
    """A modality the family does not accept names the ones it does."""
    _, processor = tiny("llava")
    with pytest.raises(ValueError, match="image"):
        sample_inputs("llava", processor, modality="video")


def test_bfloat16_build():
    """``dtype`` casts every parameter."""
    model, _ = build_tiny("llava", dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert transformers.__version__.startswith("5.")
