"""Tiny random-weight models of every supported family, built offline from the real transformers classes.

Each family module provides ``build(seed, dtype) -> (model, processor)`` and
``sample_inputs(processor, batch_size, modality, seed) -> BatchFeature``: the processor is the family's real one
(real image/video/audio processor classes) over a byte-level tokenizer built in code, so tests exercise the real
preprocessing and nothing touches a network.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

# family name -> module in this package. The family name is the model_type the factory builds.
_FAMILIES: dict[str, str] = {
    "llava": "llava",
    "llava_next": "llava",
    "llava_next_video": "llava",
    "llava_onevision": "llava",
    "qwen2_vl": "qwen2_vl",
    "qwen2_5_vl": "qwen2_vl",
    "video_llama_3": "video_llama3",
    "qwen2_5_omni_thinker": "qwen2_5_omni",
}


def tiny_families() -> list[str]:
    """Names of the families the factory can build (each is the built model's ``config.model_type``)."""
    return list(_FAMILIES)


def _module(family: str):
    if family not in _FAMILIES:
        raise ValueError(f"unknown tiny model family {family!r}; available: {', '.join(_FAMILIES)}")
    return importlib.import_module(f"{__name__}.{_FAMILIES[family]}")


def build_tiny(family: str, seed: int = 0, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """Build ``(model, processor)`` for ``family`` with seeded random weights, in eval mode, offline."""
    return _module(family).build(family, seed=seed, dtype=dtype)


def sample_inputs(family: str, processor: Any, batch_size: int = 1, modality: str | None = None,
                  seed: int = 0) -> Any:
    """Processor outputs for a short prompt with synthetic media; rows of a batch differ in length (left padded).

    ``modality`` is one of the family's modalities (``"image"``, ``"video"``, ``"audio"``); ``None`` picks the
    family's first.
    """
    return _module(family).sample_inputs(family, processor, batch_size=batch_size, modality=modality, seed=seed)


def family_modalities(family: str) -> tuple[str, ...]:
    """The modalities the tiny model of ``family`` accepts in :func:`sample_inputs`."""
    return tuple(_module(family).MODALITIES[family])
