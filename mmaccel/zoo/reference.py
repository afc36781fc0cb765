"""The project's reference models, trained on the shapes world: their architecture, and loading them offline.

``shapes-image`` is a ``LlavaForConditionalGeneration``: a CLIP vision tower over 128x128 images in 8x8 patches (256
visual tokens per image, the CLS token dropped as in LLaVA-1.5), a 2-layer MLP projector and a small Llama language
model, with LLaVA-1.5's processor and chat template over a byte-level BPE tokenizer trained on the world's text
(:func:`shapes_tokenizer`). Weights are trained by
``python -m mmaccel.zoo.train_image`` and shipped in ``mmaccel/zoo/weights/<name>/``.

``shapes-video`` is a ``LlavaNextVideoForConditionalGeneration`` of the same sizes: each 128x128 frame's 256 patch
features are average-pooled 2x2 into 64 visual tokens (8 frames: 512 tokens), with LLaVA-NeXT-Video's processor and
the same Vicuna template. ``python -m mmaccel.zoo.train_video`` starts it from ``shapes-image``'s weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import (
    CLIPVisionConfig,
    GenerationConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextImageProcessor,
    LlavaNextVideoConfig,
    LlavaNextVideoForConditionalGeneration,
    LlavaNextVideoProcessor,
    LlavaNextVideoVideoProcessor,
    LlavaProcessor,
)

from .tiny.llava import VICUNA_TEMPLATE, llava_1_5_processor, vicuna_tokenizer
from .world.corpus import world_corpus
from .world.scenes import WORLD_SIZE

WEIGHTS_DIR = Path(__file__).parent / "weights"
IMAGE_SIZE = WORLD_SIZE
PATCH_SIZE = 8
#: Frames ``shapes-video`` is trained on (and evaluated with by default).
VIDEO_FRAMES = 8
#: Size of the byte-level BPE vocabulary trained on the shapes world's text (its words become single tokens).
VOCAB_SIZE = 600


def shapes_tokenizer() -> Any:
    """The reference models' tokenizer: byte-level BPE trained on :func:`~mmaccel.zoo.world.corpus.world_corpus`
    (deterministic), LLaVA-1.5's special tokens and Vicuna chat template."""
    return vicuna_tokenizer(world_corpus(), VOCAB_SIZE)


def shapes_image_processor() -> Any:
    """The processor of ``shapes-image``: LLaVA-1.5's, at 128x128 pixels with 8x8 patches (256 image tokens)."""
    return llava_1_5_processor(shapes_tokenizer(), IMAGE_SIZE, PATCH_SIZE)


def _vision_config() -> CLIPVisionConfig:
    return CLIPVisionConfig(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                            image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=128)


def _text_config(tokenizer: Any) -> LlamaConfig:
    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=704, num_hidden_layers=4,
                       num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=2048,
                       pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id)


def shapes_image_config(tokenizer: Any) -> LlavaConfig:
    """Architecture of ``shapes-image`` (about 4 M parameters)."""
    return LlavaConfig(vision_config=_vision_config(), text_config=_text_config(tokenizer),
                       image_token_id=tokenizer.image_token_id, vision_feature_layer=-1,
                       vision_feature_select_strategy="default", image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2)


def shapes_video_processor() -> LlavaNextVideoProcessor:
    """The processor of ``shapes-video``: LLaVA-NeXT-Video's, frames at 128x128 (64 video tokens each after
    pooling); images, if any, tiled at 128x128 as LLaVA-NeXT does."""
    crop = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    images = LlavaNextImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size=crop,
                                     image_grid_pinpoints=[[IMAGE_SIZE, IMAGE_SIZE]])
    videos = LlavaNextVideoVideoProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size=crop)
    return LlavaNextVideoProcessor(video_processor=videos, image_processor=images, tokenizer=shapes_tokenizer(),
                                   chat_template=VICUNA_TEMPLATE, patch_size=PATCH_SIZE,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1)


def shapes_video_config(tokenizer: Any) -> LlavaNextVideoConfig:
    """Architecture of ``shapes-video``: ``shapes-image``'s tower, projector and language model, with
    LLaVA-NeXT-Video's 2x2 average pooling of each frame."""
    tokens = (IMAGE_SIZE // PATCH_SIZE) ** 2
    return LlavaNextVideoConfig(vision_config=_vision_config(), text_config=_text_config(tokenizer),
                                image_token_index=tokenizer.image_token_id, video_token_index=tokenizer.video_token_id,
                                vision_feature_layer=-1, vision_feature_select_strategy="default",
                                image_grid_pinpoints=[[IMAGE_SIZE, IMAGE_SIZE]], spatial_pool_mode="average",
                                spatial_pool_stride=2, image_seq_length=tokens, video_seq_length=tokens // 4)


def _generation_config(tokenizer: Any) -> GenerationConfig:
    return GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id)


def build_shapes_image(seed: int = 0) -> tuple[Any, Any]:
    """A freshly initialised ``shapes-image`` model (for training) and its processor."""
    processor = shapes_image_processor()
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(shapes_image_config(processor.tokenizer))
    model.generation_config = _generation_config(processor.tokenizer)
    return model, processor


def build_shapes_video(seed: int = 0) -> tuple[Any, Any]:
    """A freshly initialised ``shapes-video`` model (for training) and its processor."""
    processor = shapes_video_processor()
    torch.manual_seed(seed)
    model = LlavaNextVideoForConditionalGeneration(shapes_video_config(processor.tokenizer))
    model.generation_config = _generation_config(processor.tokenizer)
    return model, processor


_PROCESSORS = {"shapes-image": shapes_image_processor, "shapes-video": shapes_video_processor}
_MODEL_CLASSES = {"shapes-image": LlavaForConditionalGeneration, "shapes-video": LlavaNextVideoForConditionalGeneration}
_PROCESSOR_CLASSES = {"shapes-image": LlavaProcessor, "shapes-video": LlavaNextVideoProcessor}
_TRAINERS = {"shapes-image": "mmaccel.zoo.train_image", "shapes-video": "mmaccel.zoo.train_video"}


def reference_names() -> list[str]:
    """Names of the reference models whose weights are shipped with this install."""
    return sorted(name for name in _PROCESSORS if (WEIGHTS_DIR / name / "config.json").is_file())


def load(name: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """``(model, processor)`` of a bundled reference model, offline, in eval mode."""
    if name not in _PROCESSORS:
        raise ValueError(f"unknown reference model {name!r}; available: {', '.join(_PROCESSORS)}")
    folder = WEIGHTS_DIR / name
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"the weights of {name!r} are not in {folder}; train them with "
                                f"`python -m {_TRAINERS[name]} --out {folder}`")
    model = _MODEL_CLASSES[name].from_pretrained(folder, dtype=dtype, local_files_only=True)
    processor = _PROCESSOR_CLASSES[name].from_pretrained(folder, local_files_only=True)
    return model.to(device).eval(), processor
