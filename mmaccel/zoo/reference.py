"""The project's reference models, trained on the shapes world: their architecture, and loading them offline.

``shapes-image`` is a ``LlavaForConditionalGeneration``: a CLIP vision tower over 64x64 images in 4x4 patches (256
visual tokens per image, the CLS token dropped as in LLaVA-1.5), a 2-layer MLP projector and a small Llama language
model, with LLaVA-1.5's processor and chat template over a byte-level tokenizer. Weights are trained by
``python -m mmaccel.zoo.train_image`` and shipped in ``mmaccel/zoo/weights/<name>/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import CLIPVisionConfig, GenerationConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from .tiny.llava import llava_1_5_processor, vicuna_tokenizer

WEIGHTS_DIR = Path(__file__).parent / "weights"
IMAGE_SIZE = 64
PATCH_SIZE = 4


def shapes_image_processor() -> Any:
    """The processor of ``shapes-image``: LLaVA-1.5's, at 64x64 pixels with 4x4 patches (256 image tokens)."""
    return llava_1_5_processor(vicuna_tokenizer(), IMAGE_SIZE, PATCH_SIZE)


def shapes_image_config(tokenizer: Any) -> LlavaConfig:
    """Architecture of ``shapes-image`` (about 4 M parameters)."""
    vision = CLIPVisionConfig(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                              image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=128)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=704, num_hidden_layers=4,
                       num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=1024,
                       pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id)
    return LlavaConfig(vision_config=vision, text_config=text, image_token_id=tokenizer.image_token_id,
                       vision_feature_layer=-1, vision_feature_select_strategy="default",
                       image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2)


def build_shapes_image(seed: int = 0) -> tuple[Any, Any]:
    """A freshly initialised ``shapes-image`` model (for training) and its processor."""
    processor = shapes_image_processor()
    tokenizer = processor.tokenizer
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(shapes_image_config(tokenizer))
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id,
                                               eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    return model, processor


_PROCESSORS = {"shapes-image": shapes_image_processor}


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
                                f"`python -m mmaccel.zoo.train_image --out {folder}`")
    model = LlavaForConditionalGeneration.from_pretrained(folder, dtype=dtype, local_files_only=True)
    return model.to(device).eval(), _PROCESSORS[name]()
