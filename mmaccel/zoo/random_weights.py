"""Random-weight models with the exact shapes of released checkpoints, for speed and memory measurements offline.

Speed and memory depend on shapes, not on weights, so ``mmaccel bench --model random-llava-1.5-7b`` measures what
the real LLaVA-1.5-7B would cost (576 visual tokens per image, 32 layers of 4096) with nothing downloaded. The
outputs are meaningless text; the benchmark forces a fixed number of new tokens, and token equality between the
baseline and the accelerated side is still a real check. Weights are created directly on the target device.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    CLIPVisionConfig,
    GenerationConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
)

from .tiny.llava import llava_1_5_processor, vicuna_tokenizer

RANDOM_PREFIX = "random-"


def _llava_1_5(text_layers: int, hidden: int, heads: int, intermediate: int) -> tuple[Any, Any]:
    tokenizer = vicuna_tokenizer()
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=336, patch_size=14, projection_dim=768)
    text = LlamaConfig(vocab_size=32064, hidden_size=hidden, intermediate_size=intermediate,
                       num_hidden_layers=text_layers, num_attention_heads=heads, num_key_value_heads=heads,
                       max_position_embeddings=4096, pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=tokenizer.image_token_id,
                         vision_feature_layer=-2, vision_feature_select_strategy="default", image_seq_length=576)
    processor = llava_1_5_processor(tokenizer, image_size=336, patch_size=14)
    generation = GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                  pad_token_id=tokenizer.pad_token_id)
    return (LlavaForConditionalGeneration, config, generation), processor


#: name -> builder of ((model class, config, generation config), processor)
_SHAPES = {
    "llava-1.5-7b": lambda: _llava_1_5(text_layers=32, hidden=4096, heads=32, intermediate=11008),
    "llava-1.5-13b": lambda: _llava_1_5(text_layers=40, hidden=5120, heads=40, intermediate=13824),
}


def shape_names() -> list[str]:
    """Names accepted after ``random-``."""
    return list(_SHAPES)


def build_random(name: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.bfloat16,
                 seed: int = 0) -> tuple[Any, Any]:
    """``(model, processor)`` with random weights of the named checkpoint's shapes, built on ``device``."""
    if name not in _SHAPES:
        raise ValueError(f"unknown random-weight shape {name!r}; available: {', '.join(_SHAPES)}")
    (model_class, config, generation), processor = _SHAPES[name]()
    torch.manual_seed(seed)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = model_class(config)
    finally:
        torch.set_default_dtype(default_dtype)
    model.generation_config = generation
    return model.eval(), processor
