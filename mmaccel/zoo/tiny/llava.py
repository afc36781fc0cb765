"""Tiny LLaVA-family models, built offline: LLaVA-1.5, LLaVA-NeXT, LLaVA-NeXT-Video and LLaVA-OneVision.

Real transformers classes throughout: the family's ``...ForConditionalGeneration`` and config, a tiny CLIP vision
tower (SigLIP for OneVision, as in the released models), a Llama (Qwen2 for OneVision) language model, and the
family's real processor with its real image / video processor classes over the byte-level tokenizer of
:mod:`mmaccel.zoo.tiny.tokenizer`.

Sizes: images are resized to 16x16 (patch 4 → a 4x4 grid, 16 tokens per base image); anyres families tile larger
images over ``image_grid_pinpoints`` of 16–32 pixels, so two differently shaped images give different token counts.
Videos are 16x16 frames; NeXT-Video and OneVision pool each frame's 4x4 grid to 2x2 = 4 tokens per frame.
Language model: hidden 64, 2 layers, 4 heads / 2 key-value heads, head_dim 16.

Chat templates: LLaVA-1.5, NeXT and NeXT-Video use the Vicuna style of llava-hf (``USER: <image>\n... ASSISTANT:``;
kept byte-identical because the trained ``shapes-image`` reference model uses it); OneVision uses llava-hf's ChatML
template, which renders a turn's images back to back (``<|im_start|>user <image><image>\n...``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from transformers import (
    BatchFeature,
    CLIPImageProcessor,
    CLIPVisionConfig,
    GenerationConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessor,
    LlavaNextProcessor,
    LlavaNextVideoConfig,
    LlavaNextVideoForConditionalGeneration,
    LlavaNextVideoProcessor,
    LlavaNextVideoVideoProcessor,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageProcessor,
    LlavaOnevisionProcessor,
    LlavaOnevisionVideoProcessor,
    LlavaProcessor,
    SiglipVisionConfig,
)

from .common import TINY_TEXT, chat_prompts, resolve_modality, row_media
from .tokenizer import build_byte_tokenizer

MODALITIES: dict[str, tuple[str, ...]] = {
    "llava": ("image",),
    "llava_next": ("image",),
    "llava_next_video": ("video", "image"),
    "llava_onevision": ("image", "video"),
}

IMAGE_SIZE = 16
PATCH_SIZE = 4
PINPOINTS = [[16, 32], [32, 16], [32, 32]]

# Vicuna-style template of llava-hf/llava-1.5 (also used by LLaVA-NeXT and NeXT-Video's vicuna variants).
VICUNA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'] }} "
    "{% elif message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% if message['role'] != 'system' %}{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}<image>\n"
    "{% elif content['type'] == 'video' %}<video>\n"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %} {% endif %}"
    "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

# ChatML template of llava-hf/llava-onevision-qwen2-*-hf: a turn's images first, back to back (``<image><image>``),
# then its videos, then each text after a newline; no newline after ``<|im_end|>``.
ONEVISION_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + ' ' }}"
    "{% if message['content'] is string %}{{ '\\n' + message['content'] }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}<image>{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}<video>{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\\n' + content['text'] }}"
    "{% endfor %}{% endif %}<|im_end|>{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def vicuna_tokenizer(corpus: Iterable[str] | None = None, vocab_size: int = 0) -> Any:
    """Byte-level tokenizer with LLaVA-1.5's special tokens (``<s>``, ``</s>``, ``<image>``, ``<video>``) and its
    Vicuna chat template; with BPE merges trained on ``corpus`` when given."""
    return build_byte_tokenizer(bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                                extra_special_tokens={"image_token": "<image>", "video_token": "<video>"},
                                chat_template=VICUNA_TEMPLATE, corpus=corpus, vocab_size=vocab_size)


def llava_1_5_processor(tokenizer: Any, image_size: int, patch_size: int) -> LlavaProcessor:
    """LLaVA-1.5's processor: a CLIP image processor resizing and centre-cropping to ``image_size``, one
    ``<image>`` token per ``patch_size`` patch (the CLS token is dropped, strategy ``"default"``)."""
    image_processor = CLIPImageProcessor(size={"shortest_edge": image_size},
                                         crop_size={"height": image_size, "width": image_size})
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=patch_size,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          chat_template=VICUNA_TEMPLATE)


def _tokenizer(family: str) -> Any:
    if family == "llava_onevision":
        return build_byte_tokenizer(eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                    extra_special_tokens={"image_token": "<image>", "video_token": "<video>"},
                                    additional_special_tokens=["<|im_start|>"], chat_template=ONEVISION_TEMPLATE)
    return vicuna_tokenizer()


def _text_config(family: str, tokenizer: Any) -> dict[str, Any]:
    return {
        "model_type": "qwen2" if family == "llava_onevision" else "llama",
        "vocab_size": len(tokenizer),
        **TINY_TEXT,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }


def _clip() -> CLIPVisionConfig:
    return CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                            image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=32)


def build_processor(family: str) -> Any:
    """The family's real processor with tiny image / video sizes."""
    tokenizer = _tokenizer(family)
    crop = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    clip_like = {"patch_size": PATCH_SIZE, "vision_feature_select_strategy": "default",
                 "num_additional_image_tokens": 1}
    if family == "llava":
        return llava_1_5_processor(tokenizer, IMAGE_SIZE, PATCH_SIZE)
    next_images = LlavaNextImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size=crop,
                                          image_grid_pinpoints=PINPOINTS)
    if family == "llava_next":
        return LlavaNextProcessor(image_processor=next_images, tokenizer=tokenizer, chat_template=VICUNA_TEMPLATE,
                                  **clip_like)
    if family == "llava_next_video":
        video_processor = LlavaNextVideoVideoProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size=crop)
        return LlavaNextVideoProcessor(video_processor=video_processor, image_processor=next_images,
                                       tokenizer=tokenizer, chat_template=VICUNA_TEMPLATE, **clip_like)
    if family == "llava_onevision":
        size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
        image_processor = LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=PINPOINTS)
        video_processor = LlavaOnevisionVideoProcessor(size=size)
        return LlavaOnevisionProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                       video_processor=video_processor,
                                       num_image_tokens=(IMAGE_SIZE // PATCH_SIZE) ** 2,
                                       vision_feature_select_strategy="full", chat_template=ONEVISION_TEMPLATE)
    raise ValueError(f"not a LLaVA family: {family!r}")


def _config(family: str, tokenizer: Any) -> Any:
    text = _text_config(family, tokenizer)
    ids = {"image_token_id": tokenizer.image_token_id}
    if family == "llava":
        return LlavaConfig(vision_config=_clip(), text_config=text, vision_feature_layer=-2,
                           vision_feature_select_strategy="default", image_seq_length=16, **ids)
    if family == "llava_next":
        return LlavaNextConfig(vision_config=_clip(), text_config=text, vision_feature_layer=-2,
                               vision_feature_select_strategy="default", image_grid_pinpoints=PINPOINTS, **ids)
    ids["video_token_id"] = tokenizer.video_token_id
    if family == "llava_next_video":
        return LlavaNextVideoConfig(vision_config=_clip(), text_config=text, vision_feature_layer=-2,
                                    vision_feature_select_strategy="default", image_grid_pinpoints=PINPOINTS,
                                    spatial_pool_stride=2, spatial_pool_mode="average", **ids)
    siglip = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                image_size=IMAGE_SIZE, patch_size=PATCH_SIZE)
    return LlavaOnevisionConfig(vision_config=siglip, text_config=text, vision_feature_layer=-1,
                                vision_feature_select_strategy="full", image_grid_pinpoints=PINPOINTS,
                                vision_aspect_ratio="anyres_max_9", **ids)


_MODELS = {
    "llava": LlavaForConditionalGeneration,
    "llava_next": LlavaNextForConditionalGeneration,
    "llava_next_video": LlavaNextVideoForConditionalGeneration,
    "llava_onevision": LlavaOnevisionForConditionalGeneration,
}


def build(family: str, seed: int = 0, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """``(model, processor)`` of a LLaVA family: real classes, seeded random tiny weights, eval mode."""
    processor = build_processor(family)
    tokenizer = processor.tokenizer
    config = _config(family, tokenizer)
    torch.manual_seed(seed)
    model = _MODELS[family](config).eval().to(dtype)
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id,
                                               eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    return model, processor


# (width, height) of each row's image; rows cycle. Anyres families get differently shaped tilings.
_IMAGE_SIZES = [(40, 20), (24, 24), (20, 36)]
VIDEO_FRAMES = 4
# (frames, width, height) of each row's video: same frame count (the processors stack a batch), different sizes.
_VIDEO_SHAPES = [(VIDEO_FRAMES, 24, 24), (VIDEO_FRAMES, 32, 20)]


def sample_inputs(family: str, processor: Any, batch_size: int = 1, modality: str | None = None,
                  seed: int = 0) -> BatchFeature:
    """Chat-template prompts with one synthetic image or video per row; rows differ in text length and media.

    Images are 40x20, 24x24 and 20x36 pixels (rows cycle), so anyres families tile rows differently. Videos have
    4 frames of 24x24 or 32x20 pixels: the LLaVA video processors stack a batch's videos into one tensor, so every
    row of a batch has the same frame count (rows differ in content, size before resizing and text length).
    """
    modality = resolve_modality(family, modality, MODALITIES[family])
    texts = chat_prompts(processor, modality, batch_size)
    media = row_media(modality, batch_size, seed, _IMAGE_SIZES, _VIDEO_SHAPES)
    key = "images" if modality == "image" else "videos"
    return processor(text=texts, **{key: media}, return_tensors="pt", padding=True)
