"""The shapes world: a procedural world of coloured shapes with exact ground truth, for the reference models."""

from .scenes import (
    COLOURS,
    SHAPES,
    THEMES,
    WORLD_SIZE,
    Background,
    Scene,
    Shape,
    patch_labels,
    render_labels,
    render_scene,
    sample_scene,
)
from .videos import Track, VideoScene, render_video, sample_video

__all__ = ["COLOURS", "SHAPES", "THEMES", "WORLD_SIZE", "Background", "Scene", "Shape", "Track", "VideoScene",
           "patch_labels", "render_labels", "render_scene", "render_video", "sample_scene", "sample_video"]
