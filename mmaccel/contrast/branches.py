"""Contrast branches: the degraded view of the input that contrastive decoding subtracts.

- :func:`diffusion_noise` (VCD): forward diffusion of the processor's (normalized) pixel values to step ``t`` of a
  1,000-step sigmoid schedule, ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps``, seeded.
- :func:`without_media` (the no-image branch, M3ID-style): the prompt with every image, video and audio placeholder
  token removed, and no media inputs.
"""

from __future__ import annotations

from typing import Any

import torch

#: Processor outputs holding pixels (VCD noises them).
PIXEL_KEYS = ("pixel_values", "pixel_values_videos")


def diffusion_noise(pixels: torch.Tensor, step: int, seed: int = 0) -> torch.Tensor:
    """VCD's noised pixels: step ``step`` (0–999) of ``betas = sigmoid(linspace(-6, 6, 1000)) * (5e-3 - 1e-5)
    + 1e-5``."""
    if not 0 <= step < 1000:
        raise ValueError(f"noise_step={step} must lie in 0..999")
    betas = torch.sigmoid(torch.linspace(-6, 6, 1000, dtype=torch.float64)) * (5e-3 - 1e-5) + 1e-5
    alpha_bar = torch.cumprod(1 - betas, dim=0)[step]
    generator = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.randn(pixels.shape, generator=generator, dtype=torch.float32).to(pixels.device, pixels.dtype)
    return (alpha_bar.sqrt() * pixels + (1 - alpha_bar).sqrt() * noise).to(pixels.dtype)


def vcd_inputs(inputs: dict[str, Any], step: int, seed: int = 0) -> dict[str, Any]:
    """The original inputs with noised pixels (the same prompt, so the same token layout)."""
    return {k: (diffusion_noise(v, step, seed) if k in PIXEL_KEYS and isinstance(v, torch.Tensor) else v)
            for k, v in inputs.items()}


def without_media(inputs: dict[str, Any], media_token_ids: set[int]) -> dict[str, Any]:
    """The prompt with its media placeholders removed and no media inputs (batch 1)."""
    ids = inputs["input_ids"]
    if ids.shape[0] != 1:
        raise ValueError("the no-image contrast branch supports batch 1 (rows would lose different lengths)")
    keep = ~torch.isin(ids[0], torch.tensor(sorted(media_token_ids), device=ids.device))
    out = {"input_ids": ids[:, keep]}
    if inputs.get("attention_mask") is not None:
        out["attention_mask"] = inputs["attention_mask"][:, keep]
    return out
