"""Model-family adapters, detected from ``config.model_type`` (installed as ``mmaccel.adapters``)."""

from __future__ import annotations

import importlib

from torch import nn

from .base import ModelAdapter, Span, TokenLayout, spans_from_mask, split_into_frames

# model_type -> "module:ClassName" inside this package; modules are imported on first use.
_REGISTRY: dict[str, str] = {
    "llava": "llava:LlavaAdapter",
    "llava_next": "llava:LlavaNextAdapter",
    "llava_next_video": "llava:LlavaNextVideoAdapter",
    "llava_onevision": "llava:LlavaOnevisionAdapter",
    "qwen2_vl": "qwen2_vl:Qwen2VLAdapter",
    "qwen2_5_vl": "qwen2_vl:Qwen2_5_VLAdapter",
    "video_llama_3": "video_llama3:VideoLlama3Adapter",
    "qwen2_5_omni_thinker": "qwen2_5_omni:Qwen2_5OmniThinkerAdapter",
}


class UnsupportedModelError(ValueError):
    """Raised for a model whose family mmaccel has no adapter for."""


def supported_model_types() -> list[str]:
    """The ``config.model_type`` values mmaccel supports."""
    return sorted(_REGISTRY)


def adapter_class(model_type: str) -> type[ModelAdapter]:
    """The adapter class serving ``model_type``; raises :class:`UnsupportedModelError` if there is none."""
    target = _REGISTRY.get(model_type)
    if target is None:
        raise UnsupportedModelError(
            f"model_type {model_type!r} is not supported by mmaccel; supported: {', '.join(supported_model_types())}"
        )
    module_name, class_name = target.split(":")
    module = importlib.import_module(f"{__name__}.{module_name}")
    return getattr(module, class_name)


def get_adapter(model: nn.Module) -> ModelAdapter:
    """Build the adapter for a loaded model instance, detected from ``model.config.model_type``."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type is None:
        raise UnsupportedModelError(
            f"{type(model).__name__} has no config.model_type; mmaccel supports HuggingFace transformers models of "
            f"types: {', '.join(supported_model_types())}"
        )
    return adapter_class(model_type)(model)


__all__ = [
    "ModelAdapter",
    "Span",
    "TokenLayout",
    "UnsupportedModelError",
    "adapter_class",
    "get_adapter",
    "spans_from_mask",
    "split_into_frames",
    "supported_model_types",
]
