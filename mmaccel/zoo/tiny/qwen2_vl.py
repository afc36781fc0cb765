"""Tiny Qwen2-VL and Qwen2.5-VL models (image + video, dynamic resolution, M-RoPE), built offline.

Both families use the real transformers classes: ``Qwen2VLForConditionalGeneration`` /
``Qwen2_5_VLForConditionalGeneration`` with their real configs, and the real ``Qwen2VLProcessor`` /
``Qwen2_5_VLProcessor`` over the real ``Qwen2VLImageProcessor`` and ``Qwen2VLVideoProcessor`` (Qwen2.5-VL reuses
Qwen2-VL's image and video processors, as its hub checkpoints do).

Sizes (both families):

- Language model: hidden 64, 2 layers, 4 heads / 2 key-value heads, head_dim 16, intermediate 128,
  ``mrope_section = [2, 3, 3]`` (sums to head_dim / 2 = 8; the real [16, 24, 24] scaled by 1/8).
- Vision tower: patch_size 4 (so images are only tens of pixels wide), spatial_merge_size 2, temporal_patch_size 2,
  2 blocks, width 32, 2 heads (vision head_dim 16). The real patch merger (2x2 -> MLP -> LM hidden) is kept.
  Qwen2.5-VL keeps its window attention: ``window_size = 16`` pixels = 2x2 merged tokens per window, block 0
  windowed and block 1 full (``fullatt_block_indexes = [1]``), so any image larger than 16x16 pixels really is cut
  into several (padded) windows.
- Processors: ``min_pixels = 16 * 16`` (>= 4 visual tokens), ``max_pixels = 48 * 48`` (<= 36 visual tokens per
  image / per temporal group of a video). One visual token covers 8x8 pixels (x 2 frames for a video).

The tokenizer is the byte-level one of :mod:`mmaccel.zoo.tiny.tokenizer` with Qwen's special tokens
(``<|endoftext|>`` = pad / bos, ``<|im_end|>`` = eos, ``<|im_start|>``, ``<|vision_start|>``, ``<|vision_end|>``,
``<|vision_pad|>``, ``<|image_pad|>``, ``<|video_pad|>`` and the grounding markers) and the real Qwen2-VL chat
template (default system prompt, ``<|vision_start|><|image_pad|><|vision_end|>`` per image).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    BatchFeature,
    GenerationConfig,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
)

from .common import TINY_TEXT, chat_prompts, resolve_modality, row_media, video_metadata
from .tokenizer import build_byte_tokenizer

MODALITIES: dict[str, tuple[str, ...]] = {
    "qwen2_vl": ("image", "video"),
    "qwen2_5_vl": ("image", "video"),
}

PATCH_SIZE = 4
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
MIN_PIXELS = 16 * 16
MAX_PIXELS = 48 * 48
#: Frames per second assumed for the synthetic clips (Qwen2.5-VL turns it into ``second_per_grid_ts``).
VIDEO_FPS = 1.0

# The real Qwen2-VL-Instruct chat template (chat_template.json of Qwen/Qwen2-VL-7B-Instruct; Qwen2.5-VL's is the same).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen2's special tokens besides pad / eos, in the real tokenizer's order.
_MARKER_TOKENS = [
    "<|im_start|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_pad|>",
]

_CLASSES = {
    "qwen2_vl": (Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor),
    "qwen2_5_vl": (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor),
}


def build_processor(family: str) -> Qwen2VLProcessor | Qwen2_5_VLProcessor:
    """The family's real processor with tiny image / video sizes over a byte-level Qwen-style tokenizer."""
    if family not in _CLASSES:
        raise ValueError(f"not a Qwen2-VL family: {family!r}")
    tokenizer = build_byte_tokenizer(
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "vision_start_token": "<|vision_start|>",
            "vision_end_token": "<|vision_end|>",
        },
        additional_special_tokens=_MARKER_TOKENS,
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
    )
    sizes = {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}
    common = {"patch_size": PATCH_SIZE, "merge_size": MERGE_SIZE, "temporal_patch_size": TEMPORAL_PATCH_SIZE}
    image_processor = Qwen2VLImageProcessor(size=dict(sizes), **common)
    video_processor = Qwen2VLVideoProcessor(
        size=dict(sizes), do_sample_frames=False, cap_pixels_per_frame=False, **common
    )
    processor_class = _CLASSES[family][2]
    return processor_class(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


def _config(family: str, tokenizer: Any) -> Qwen2VLConfig | Qwen2_5_VLConfig:
    special = {
        name: tokenizer.convert_tokens_to_ids(token)
        for name, token in (
            ("image_token_id", "<|image_pad|>"),
            ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"),
            ("vision_end_token_id", "<|vision_end|>"),
        )
    }
    pad_id = tokenizer.pad_token_id
    text_config = {
        "vocab_size": len(tokenizer),
        **TINY_TEXT,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
        "bos_token_id": pad_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": pad_id,
    }
    vision_common = {
        "depth": 2,
        "num_heads": 2,
        "in_channels": 3,
        "patch_size": PATCH_SIZE,
        "spatial_merge_size": MERGE_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
    }
    if family == "qwen2_vl":
        vision_config = {**vision_common, "embed_dim": 32, "mlp_ratio": 2, "hidden_size": 64}
        return Qwen2VLConfig(text_config=text_config, vision_config=vision_config, **special)
    vision_config = {
        **vision_common,
        "hidden_size": 32,
        "intermediate_size": 64,
        "out_hidden_size": 64,
        "window_size": PATCH_SIZE * MERGE_SIZE * 2,
        "fullatt_block_indexes": [1],
        "tokens_per_second": 2,
    }
    return Qwen2_5_VLConfig(text_config=text_config, vision_config=vision_config, **special)


def build(family: str, seed: int = 0, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """``(model, processor)`` of ``qwen2_vl`` or ``qwen2_5_vl``: real classes, seeded random tiny weights, eval mode."""
    processor = build_processor(family)
    tokenizer = processor.tokenizer
    config = _config(family, tokenizer)
    torch.manual_seed(seed)
    model = _CLASSES[family][1](config)
    model.eval()
    model.to(dtype)
    # As in the real generation_config.json: pad = bos = <|endoftext|>, eos = [<|im_end|>, <|endoftext|>].
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.pad_token_id,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.pad_token_id],
    )
    return model, processor


# (width, height) of the image in each row and (frames, width, height) of the video in each row; rows cycle.
_IMAGE_SIZES = [(40, 32), (24, 16), (32, 32)]
_VIDEO_SHAPES = [(4, 32, 24), (6, 24, 16), (4, 16, 16)]


def sample_inputs(family: str, processor: Any, batch_size: int = 1, modality: str | None = None,
                  seed: int = 0) -> BatchFeature:
    """Chat-template prompts with one synthetic image or video per row, processed for the model.

    Rows differ in media size (dynamic resolution: different visual-token counts), in frame count for video and in
    question length, so a batch of 2 is left padded. ``video`` rows carry 4 or 6 frames (2 or 3 temporal groups).
    Videos carry ``video_metadata`` with ``fps = VIDEO_FPS = 1``, so Qwen2.5-VL's ``second_per_grid_ts`` is
    ``temporal_patch_size / fps = 2.0`` and its temporal M-RoPE positions step by ``tokens_per_second * 2.0 = 4``
    per temporal group (without metadata the processor assumes 24 fps: ``int(k / 6)``, 0 for the first 6 groups).
    """
    modality = resolve_modality(family, modality, MODALITIES[family])
    texts = chat_prompts(processor, modality, batch_size)
    media = row_media(modality, batch_size, seed, _IMAGE_SIZES, _VIDEO_SHAPES)
    if modality == "image":
        return processor(text=texts, images=media, return_tensors="pt", padding=True)
    return processor(text=texts, videos=media, video_metadata=video_metadata(media, VIDEO_FPS), return_tensors="pt",
                     padding=True)
