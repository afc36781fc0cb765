"""Seeded synthetic media for tests and the tiny models: images, videos and audio clips."""

from __future__ import annotations

import numpy as np
from PIL import Image


def make_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """An RGB image of coloured rectangles on a noisy background, deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 64, size=(height, width, 3), dtype=np.uint8)
    for _ in range(3):
        x0, y0 = rng.integers(0, max(1, width // 2)), rng.integers(0, max(1, height // 2))
        x1, y1 = x0 + rng.integers(2, max(3, width // 2)), y0 + rng.integers(2, max(3, height // 2))
        pixels[y0:y1, x0:x1] = rng.integers(64, 256, size=3, dtype=np.uint8)
    return Image.fromarray(pixels, mode="RGB")


def make_video(num_frames: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """A ``(frames, height, width, 3)`` uint8 clip: a square moving across a noisy background."""
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 64, size=(height, width, 3), dtype=np.uint8)
    colour = rng.integers(128, 256, size=3, dtype=np.uint8)
    side = max(2, min(width, height) // 4)
    frames = np.repeat(background[None], num_frames, axis=0)
    for f in range(num_frames):
        x = int((width - side) * f / max(1, num_frames - 1))
        y = (height - side) // 2
        frames[f, y:y + side, x:x + side] = colour
    return frames


def make_audio(seconds: float, sampling_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """A mono float32 waveform: two tones plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sampling_rate), dtype=np.float32) / sampling_rate
    freqs = rng.uniform(200.0, 2000.0, size=2)
    wave = 0.4 * np.sin(2 * np.pi * freqs[0] * t) + 0.2 * np.sin(2 * np.pi * freqs[1] * t)
    return (wave + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)
