"""Tiny Qwen2-VL / Qwen2.5-VL factory: real classes, consistent special tokens, real preprocessing, generate works."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
from transformers import (
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
)
from transformers.vision_utils import get_vision_window_index

from mmaccel.zoo.tiny import build_tiny, family_modalities, sample_inputs

FAMILIES = ["qwen2_vl", "qwen2_5_vl"]
CLASSES = {
    "qwen2_vl": (Qwen2VLForConditionalGeneration, Qwen2VLProcessor),
    "qwen2_5_vl": (Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor),
}


class _Records(logging.Handler):
    """Collects transformers log records of level WARNING and above."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize("family", FAMILIES)
def test_real_classes_and_tiny_sizes(tiny, family):
    """The factory builds the family's real model / processor classes with the requested tiny sizes."""
    model, processor = tiny(family)
    model_class, processor_class = CLASSES[family]
    assert type(model) is model_class
    assert model.config.model_type == family
    assert type(processor) is processor_class
    assert type(processor.image_processor) is Qwen2VLImageProcessor
    assert type(processor.video_processor) is Qwen2VLVideoProcessor
    text = model.config.text_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads) == (
        64, 2, 4, 2)
    head_dim = text.hidden_size // text.num_attention_heads
    assert head_dim == 16
    assert sum(text.rope_parameters["mrope_section"]) == head_dim // 2
    assert model.model.language_model.rotary_emb.mrope_section == text.rope_parameters["mrope_section"]
    assert not model.training
    assert sum(p.numel() for p in model.parameters()) < 2_000_000


@pytest.mark.parametrize("family", FAMILIES)
def test_special_tokens_agree_between_tokenizer_and_config(tiny, family):
    """Every Qwen special token exists, and the config's ids are the tokenizer's ids."""
    model, processor = tiny(family)
    tok = processor.tokenizer
    ids = {t: tok.convert_tokens_to_ids(t) for t in (
        "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>",
        "<|endoftext|>")}
    assert tok.unk_token_id not in ids.values() and len(set(ids.values())) == len(ids)
    for token, token_id in ids.items():
        assert tok.encode(token, add_special_tokens=False) == [token_id], token
    assert model.config.image_token_id == ids["<|image_pad|>"] == processor.image_token_id
    assert model.config.video_token_id == ids["<|video_pad|>"] == processor.video_token_id
    assert model.config.vision_start_token_id == ids["<|vision_start|>"]
    assert model.config.vision_end_token_id == ids["<|vision_end|>"]
    assert model.config.text_config.vocab_size == len(tok)
    assert tok.padding_side == "left"
    assert tok.pad_token_id == ids["<|endoftext|>"] and tok.eos_token_id == ids["<|im_end|>"]
    gen = model.generation_config
    assert gen.pad_token_id == ids["<|endoftext|>"]
    assert gen.bos_token_id == ids["<|endoftext|>"]
    assert gen.eos_token_id == [ids["<|im_end|>"], ids["<|endoftext|>"]]


@pytest.mark.parametrize("family", FAMILIES)
def test_chat_template_is_qwen_style(tiny, family):
    """The chat template adds the default system turn and wraps each image / video in vision_start / vision_end."""
    _, processor = tiny(family)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "video"}, {"type": "text", "text": "Hi"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|><|vision_start|><|video_pad|><|vision_end|>Hi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_sample_inputs_dynamic_resolution_and_padding(tiny, family):
    """Batch 2: different image sizes (different token counts), left padding in one row, >= 2 groups per video."""
    model, processor = tiny(family)
    assert family_modalities(family) == ("image", "video")
    images = sample_inputs(family, processor, batch_size=2, modality="image")
    grids = images["image_grid_thw"]
    tokens = (grids.prod(-1) // 4).tolist()
    assert len(set(tokens)) == 2 and min(tokens) >= 2
    assert (images["attention_mask"] == 0).any()
    assert (images["input_ids"] == model.config.image_token_id).sum().item() == sum(tokens)
    assert images["mm_token_type_ids"].shape == images["input_ids"].shape
    videos = sample_inputs(family, processor, batch_size=2, modality="video")
    assert (videos["attention_mask"] == 0).any()
    assert (videos["video_grid_thw"][:, 0] >= 2).all()
    if family == "qwen2_5_vl":
        assert torch.equal(videos["second_per_grid_ts"], torch.tensor([2.0, 2.0]))
    with pytest.raises(ValueError):
        sample_inputs(family, processor, modality="audio")


@pytest.mark.parametrize("family", FAMILIES)
def test_sample_inputs_deterministic_in_seed(tiny, family):
    """Same seed, same tensors; another seed, other pixels."""
    _, processor = tiny(family)
    a = sample_inputs(family, processor, batch_size=2, modality="video", seed=3)
    b = sample_inputs(family, processor, batch_size=2, modality="video", seed=3)
    c = sample_inputs(family, processor, batch_size=2, modality="video", seed=4)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key])), key
    assert not torch.equal(a["pixel_values_videos"], c["pixel_values_videos"])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("modality", ["image", "video"])
@pytest.mark.parametrize("batch_size", [1, 2])
def test_generate_runs_without_warnings(tiny, family, modality, batch_size):
    """Greedy generate with 4 new tokens works and logs no warning (pad / eos / bos ids are all set)."""
    model, processor = tiny(family)
    inputs = sample_inputs(family, processor, batch_size=batch_size, modality=modality)
    handler = _Records()
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    finally:
        logger.removeHandler(handler)
    assert out.shape == (batch_size, inputs["input_ids"].shape[1] + 4)
    assert [r.getMessage() for r in handler.records] == []
    assert [str(w.message) for w in caught] == []


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_logits(family):
    """Two builds with the same seed give identical logits; another seed gives different ones."""
    model_a, processor = build_tiny(family, seed=5)
    model_b, _ = build_tiny(family, seed=5)
    model_c, _ = build_tiny(family, seed=6)
    inputs = sample_inputs(family, processor, batch_size=2, modality="image")
    with torch.no_grad():
        logits_a = model_a(**inputs).logits
        logits_b = model_b(**inputs).logits
        logits_c = model_c(**inputs).logits
    assert torch.equal(logits_a, logits_b)
    assert not torch.allclose(logits_a, logits_c)


def test_bfloat16_build():
    """``dtype`` casts the whole model, and it still generates."""
    model, processor = build_tiny("qwen2_5_vl", seed=0, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    inputs = sample_inputs("qwen2_5_vl", processor, batch_size=2, modality="video")
    assert model.generate(**inputs, max_new_tokens=2, do_sample=False).shape[0] == 2


def test_qwen2_5_vl_vision_tower_really_uses_windows(tiny):
    """The tiny Qwen2.5-VL keeps window attention: a sample image spans several windows, one block is full."""
    model, processor = tiny("qwen2_5_vl")
    vision = model.model.visual
    assert list(vision.fullatt_block_indexes) == [1] and len(vision.blocks) == 2
    inputs = sample_inputs("qwen2_5_vl", processor, batch_size=1, modality="image")
    window_index, cu_window_seqlens = get_vision_window_index(
        inputs["image_grid_thw"], vision.spatial_merge_size, vision.window_size, vision.patch_size
    )
    assert len(cu_window_seqlens) - 1 > 1
    assert not torch.equal(window_index, torch.arange(len(window_index)))
