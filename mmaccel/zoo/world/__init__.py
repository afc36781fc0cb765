"""The shapes world: a procedural world of coloured shapes with exact ground truth, for the reference models."""

from .scenes import COLOURS, SHAPES, THEMES, Background, Scene, Shape, render_scene, sample_scene
from .videos import Track, VideoScene, render_video, sample_video

__all__ = ["COLOURS", "SHAPES", "THEMES", "Background", "Scene", "Shape", "Track", "VideoScene", "render_scene",
           "render_video", "sample_scene", "sample_video"]
