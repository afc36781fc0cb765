"""Load ``(model, processor)`` from a name every mmaccel CLI accepts for ``--model``.

Accepted names: a bundled reference model (``shapes-image``, trained on the shapes world), ``tiny-<family>`` (an
offline tiny random-weight model, e.g. ``tiny-llava``), ``random-<checkpoint>`` (random weights with a released
checkpoint's exact shapes, e.g. ``random-llava-1.5-7b``, for speed and memory measurements without a download), a
local directory saved with ``save_pretrained``, or a Hugging Face Hub id (needs network access, or a filled local
cache).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .adapters import UnsupportedModelError, adapter_class
from .zoo import reference
from .zoo.random_weights import RANDOM_PREFIX, build_random, shape_names
from .zoo.tiny import build_tiny, tiny_families

TINY_PREFIX = "tiny-"
#: The model ``mmaccel bench`` uses when ``--model`` is not given: the bundled reference model once its weights are
#: shipped, a tiny random-weight LLaVA before that.
DEFAULT_MODEL = "shapes-image" if "shapes-image" in reference.reference_names() else "tiny-llava"


class ModelLoadError(RuntimeError):
    """A model name that cannot be loaded, with the reason and what is accepted."""


def model_names() -> list[str]:
    """The built-in model names: bundled reference models, offline tiny models, random-weight models of real
    shapes."""
    return (reference.reference_names() + [TINY_PREFIX + family for family in tiny_families()]
            + [RANDOM_PREFIX + name for name in shape_names()])


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``"auto"`` → bfloat16 on CUDA, float32 elsewhere; otherwise ``float32``/``float16``/``bfloat16``."""
    table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in table:
        raise ValueError(f"dtype {name!r} is not supported; allowed: auto, {', '.join(table)}")
    return table[name]


def load_model(name: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
               seed: int = 0) -> tuple[Any, Any]:
    """Load ``(model, processor)`` for ``name`` on ``device`` in ``dtype``, in eval mode."""
    device = torch.device(device)
    if name in reference.reference_names():
        return reference.load(name, device=device, dtype=dtype)
    if name.startswith(TINY_PREFIX):
        family = name[len(TINY_PREFIX):]
        if family not in tiny_families():
            raise ModelLoadError(f"unknown tiny model {name!r}; available: {', '.join(model_names())}")
        model, processor = build_tiny(family, seed=seed, dtype=dtype)
        return model.to(device), processor
    if name.startswith(RANDOM_PREFIX):
        shape = name[len(RANDOM_PREFIX):]
        if shape not in shape_names():
            raise ModelLoadError(f"unknown random-weight model {name!r}; available: {', '.join(model_names())}")
        return build_random(shape, device=device, dtype=dtype, seed=seed)
    return _load_pretrained(name, device, dtype)


def _load_pretrained(name: str, device: torch.device, dtype: torch.dtype) -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    is_local = Path(name).exists()
    try:
        config = AutoConfig.from_pretrained(name)
    except OSError as err:
        where = "the local directory has no usable config.json" if is_local else (
            "it is not a local directory, and the Hugging Face Hub could not be reached or has no such repo"
        )
        raise ModelLoadError(
            f"cannot load model {name!r}: {where} ({err.__class__.__name__}). Pass a local directory saved with "
            f"save_pretrained, a reachable Hub id, or one of: {', '.join(model_names())}"
        ) from None
    try:
        adapter_class(config.model_type)
    except UnsupportedModelError as err:
        raise ModelLoadError(str(err)) from None
    model = AutoModelForImageTextToText.from_pretrained(name, dtype=dtype)
    processor = AutoProcessor.from_pretrained(name)
    return model.to(device).eval(), processor
