"""Tiny Qwen2.5-Omni thinker (``qwen2_5_omni_thinker``): image, video and audio, built offline.

``Qwen2_5OmniThinkerForConditionalGeneration`` (the text-generating half of Qwen2.5-Omni) with tiny vision (window
attention kept), audio (Whisper-style) and Qwen2 text towers, and the real ``Qwen2_5OmniProcessor`` over the real
``Qwen2VLImageProcessor``, ``Qwen2VLVideoProcessor`` and ``WhisperFeatureExtractor`` (16 mel bins, 1-second
chunks so audio stays small: 1 s of audio → 100 frames → 25 audio tokens).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    BatchFeature,
    GenerationConfig,
    Qwen2_5OmniProcessor,
    Qwen2_5OmniThinkerConfig,
    Qwen2_5OmniThinkerForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
    WhisperFeatureExtractor,
)

from .common import TINY_TEXT, chat_prompts, resolve_modality, row_media
from .media import make_audio
from .tokenizer import build_byte_tokenizer

MODALITIES: dict[str, tuple[str, ...]] = {"qwen2_5_omni_thinker": ("image", "video", "audio")}

PATCH_SIZE = 4
MEL_BINS = 16
SAMPLING_RATE = 16000
VIDEO_FPS = 1.0
#: Pixel budget of images and video frames. The processor class carries real-size video defaults that override its
#: video processor's, so calls pass this again (``videos_kwargs={"size": SIZES}``).
SIZES = {"shortest_edge": 16 * 16, "longest_edge": 48 * 48}

CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are Qwen, a virtual human.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_bos|><|IMAGE|><|vision_eos|>"
    "{% elif content['type'] == 'video' %}<|vision_bos|><|VIDEO|><|vision_eos|>"
    "{% elif content['type'] == 'audio' %}<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_NAMED_TOKENS = {
    "image_token": "<|IMAGE|>",
    "audio_token": "<|AUDIO|>",
    "video_token": "<|VIDEO|>",
    "vision_bos_token": "<|vision_bos|>",
    "vision_eos_token": "<|vision_eos|>",
    "audio_bos_token": "<|audio_bos|>",
    "audio_eos_token": "<|audio_eos|>",
}


def build_processor(family: str = "qwen2_5_omni_thinker") -> Qwen2_5OmniProcessor:
    """The real Qwen2.5-Omni processor with tiny image / video / audio sizes."""
    tokenizer = build_byte_tokenizer(eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                     extra_special_tokens=_NAMED_TOKENS, additional_special_tokens=["<|im_start|>"],
                                     chat_template=CHAT_TEMPLATE)
    sizes = dict(SIZES)
    common = {"patch_size": PATCH_SIZE, "merge_size": 2, "temporal_patch_size": 2}
    image_processor = Qwen2VLImageProcessor(size=dict(sizes), **common)
    video_processor = Qwen2VLVideoProcessor(size=dict(sizes), do_sample_frames=False, cap_pixels_per_frame=False,
                                            **common)
    feature_extractor = WhisperFeatureExtractor(feature_size=MEL_BINS, sampling_rate=SAMPLING_RATE, chunk_length=1)
    return Qwen2_5OmniProcessor(image_processor=image_processor, video_processor=video_processor,
                                feature_extractor=feature_extractor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE)


def build(family: str = "qwen2_5_omni_thinker", seed: int = 0,
          dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """``(model, processor)``: the real thinker class, seeded random tiny weights, eval mode."""
    processor = build_processor(family)
    tok = processor.tokenizer
    text = {"vocab_size": len(tok), **TINY_TEXT,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
            "pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id}
    vision = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "patch_size": PATCH_SIZE,
              "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": PATCH_SIZE * 2 * 2,
              "out_hidden_size": 64, "fullatt_block_indexes": [1]}
    audio = {"num_mel_bins": MEL_BINS, "encoder_layers": 2, "encoder_attention_heads": 2, "encoder_ffn_dim": 64,
             "d_model": 32, "max_source_positions": 1500, "n_window": 50, "output_dim": 64}
    config = Qwen2_5OmniThinkerConfig(
        text_config=text, vision_config=vision, audio_config=audio,
        audio_token_index=tok.audio_token_id, image_token_index=tok.image_token_id,
        video_token_index=tok.video_token_id, audio_start_token_id=tok.audio_bos_token_id,
        audio_end_token_id=tok.audio_eos_token_id, vision_start_token_id=tok.vision_bos_token_id,
        user_token_id=tok.convert_tokens_to_ids("u"),
    )
    torch.manual_seed(seed)
    model = Qwen2_5OmniThinkerForConditionalGeneration(config).eval().to(dtype)
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return model, processor


_IMAGE_SIZES = [(40, 32), (24, 16), (32, 32)]
_VIDEO_SHAPES = [(4, 32, 24), (6, 24, 16), (4, 16, 16)]
_AUDIO_SECONDS = [1.0, 0.6, 0.8]


def sample_inputs(family: str, processor: Any, batch_size: int = 1, modality: str | None = None,
                  seed: int = 0) -> BatchFeature:
    """Chat-template prompts with one synthetic image, video or audio clip per row; rows differ in length."""
    modality = resolve_modality(family, modality, MODALITIES[family])
    texts = chat_prompts(processor, modality, batch_size)
    if modality == "audio":
        media = [make_audio(_AUDIO_SECONDS[row % len(_AUDIO_SECONDS)], SAMPLING_RATE, seed=seed + row)
                 for row in range(batch_size)]
    else:
        media = row_media(modality, batch_size, seed, _IMAGE_SIZES, _VIDEO_SHAPES)
    if modality == "image":
        return processor(text=texts, images=media, return_tensors="pt", padding=True)
    if modality == "video":
        return processor(text=texts, videos=media, fps=VIDEO_FPS, videos_kwargs={"size": dict(SIZES)},
                         return_tensors="pt", padding=True)
    return processor(text=texts, audio=media, sampling_rate=SAMPLING_RATE, return_tensors="pt", padding=True)


def sample_audio_video_inputs(processor: Any, seed: int = 0,
                              question: str = "What do you see and hear?") -> BatchFeature:
    """One prompt holding a synthetic video and a separate audio clip (``[video, audio, question]``): the input of
    the audio-visual decoding strategies."""
    content = [{"type": "video"}, {"type": "audio"}, {"type": "text", "text": question}]
    text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                         tokenize=False)
    video = row_media("video", 1, seed, _IMAGE_SIZES, _VIDEO_SHAPES)
    audio = [make_audio(_AUDIO_SECONDS[0], SAMPLING_RATE, seed=seed)]
    return processor(text=[text], videos=video, audio=audio, fps=VIDEO_FPS, videos_kwargs={"size": dict(SIZES)},
                     sampling_rate=SAMPLING_RATE, return_tensors="pt")
