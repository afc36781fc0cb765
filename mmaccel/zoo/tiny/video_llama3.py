"""Tiny VideoLLaMA3 (``video_llama_3``), built offline from the real classes and the real processors.

``VideoLlama3ForConditionalGeneration`` with a tiny ``VideoLlama3VisionModel`` (patch 4) and a Qwen2 language model;
``VideoLlama3Processor`` with the real ``VideoLlama3ImageProcessor`` (images: no patch merging, one token per 4x4
patch) and ``VideoLlama3VideoProcessor`` (videos: 2x2 merge, then *token compression*: a frame's merged token is
dropped when it barely differs from the same token of the previous frame, so frames have different token counts;
the processor returns which tokens survive as ``video_compression_mask``).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    BatchFeature,
    GenerationConfig,
    VideoLlama3Config,
    VideoLlama3ForConditionalGeneration,
    VideoLlama3ImageProcessor,
    VideoLlama3Processor,
    VideoLlama3VideoProcessor,
)

from .common import TINY_TEXT, chat_prompts, resolve_modality, row_media, video_metadata
from .tokenizer import build_byte_tokenizer

MODALITIES: dict[str, tuple[str, ...]] = {"video_llama_3": ("image", "video")}

PATCH_SIZE = 4
#: Frames per second of the synthetic clips; the prompt carries one "Time t.ts:" marker per frame.
VIDEO_FPS = 1.0

# The real template's structure (Qwen chat markers; one placeholder per image or video, expanded by the processor).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}<|image_pad|>\n"
    "{% elif content['type'] == 'video' %}<|video_pad|>\n"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_processor(family: str = "video_llama_3") -> VideoLlama3Processor:
    """The real VideoLLaMA3 processor with tiny image / video sizes over a byte-level Qwen-style tokenizer."""
    tokenizer = build_byte_tokenizer(
        eos_token="<|im_end|>", pad_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
        additional_special_tokens=["<|im_start|>"], chat_template=CHAT_TEMPLATE,
    )
    image_processor = VideoLlama3ImageProcessor(size={"shortest_edge": 8 * 8, "longest_edge": 24 * 24},
                                                patch_size=PATCH_SIZE)
    # The video processor spreads its pixel budget over the frames.
    video_processor = VideoLlama3VideoProcessor(size={"shortest_edge": 8 * 8, "longest_edge": 16 * 16 * 8},
                                                patch_size=PATCH_SIZE, min_frames=2)
    return VideoLlama3Processor(image_processor=image_processor, tokenizer=tokenizer,
                                video_processor=video_processor, chat_template=CHAT_TEMPLATE)


def build(family: str = "video_llama_3", seed: int = 0, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """``(model, processor)``: real classes, seeded random tiny weights, eval mode."""
    processor = build_processor(family)
    tokenizer = processor.tokenizer
    text = {"model_type": "qwen2", "vocab_size": len(tokenizer), **TINY_TEXT, "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "patch_size": PATCH_SIZE}
    config = VideoLlama3Config(text_config=text, vision_config=vision, image_token_id=tokenizer.image_token_id,
                               video_token_id=tokenizer.video_token_id)
    torch.manual_seed(seed)
    model = VideoLlama3ForConditionalGeneration(config).eval().to(dtype)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    return model, processor


_IMAGE_SIZES = [(20, 12), (16, 16), (12, 20)]
_VIDEO_SHAPES = [(4, 16, 16), (3, 24, 16), (4, 16, 24)]  # (frames, width, height)


def sample_inputs(family: str, processor: Any, batch_size: int = 1, modality: str | None = None,
                  seed: int = 0) -> BatchFeature:
    """Chat-template prompts with one synthetic image or video per row; rows differ in media and text length.

    Videos carry ``video_metadata`` at ``VIDEO_FPS`` so the prompt's per-frame "Time t.ts:" markers are exact.
    """
    modality = resolve_modality(family, modality, MODALITIES[family])
    texts = chat_prompts(processor, modality, batch_size)
    media = row_media(modality, batch_size, seed, _IMAGE_SIZES, _VIDEO_SHAPES)
    if modality == "image":
        return processor(text=texts, images=media, return_tensors="pt", padding=True)
    return processor(text=texts, videos=media, video_metadata=video_metadata(media, VIDEO_FPS), return_tensors="pt",
                     padding=True)
