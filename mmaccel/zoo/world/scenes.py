"""The shapes world: seeded scenes of coloured shapes whose ground truth is known exactly.

A :class:`Scene` is a theme, a textured background and a list of :class:`Shape` objects; :func:`render_scene` draws
it. Themes give the world co-occurrence structure: each theme favours a group of shapes, so a model learns priors
("a harbour has rings") that can mislead it about an image — what POPE's adversarial split probes and contrastive
decoding fights. Everything is a pure function of a ``numpy.random.Generator``, so the same seed gives the same
bytes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "hexagon", "diamond", "cross", "ring")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (50, 90, 225),
    "yellow": (235, 210, 40),
    "purple": (145, 60, 185),
    "orange": (245, 140, 30),
    "cyan": (40, 205, 215),
    "white": (245, 245, 245),
}
#: Each theme favours three shapes; groups overlap so that co-occurrence is informative but not a lookup table.
THEMES: dict[str, tuple[str, ...]] = {
    "garden": ("circle", "star", "diamond"),
    "workshop": ("square", "cross", "hexagon"),
    "harbour": ("triangle", "ring", "circle"),
    "market": ("hexagon", "diamond", "square"),
}
BACKGROUNDS: tuple[str, ...] = ("plain", "stripes", "checker", "gradient")
#: Side in pixels of rendered images and frames unless asked otherwise (the reference models' input size).
WORLD_SIZE = 128
#: Probability that an object's shape is drawn from its scene's theme group rather than from all shapes.
THEME_PROBABILITY = 0.8
#: Centres of two objects are at least this fraction of the sum of their radii apart: overlap, never occlusion.
MIN_SEPARATION = 0.75
_PLACEMENT_TRIES = 30


@dataclass(frozen=True)
class Shape:
    """One object: centre ``(x, y)`` and ``size`` (its bounding-box side) as fractions of the image side."""

    shape: str
    colour: str
    x: float
    y: float
    size: float
    rotation: float = 0.0

    @property
    def horizontal(self) -> str:
        """``"left"``, ``"middle"`` or ``"right"`` third of the image."""
        return ("left", "middle", "right")[min(2, int(self.x * 3))]

    @property
    def vertical(self) -> str:
        """``"top"``, ``"middle"`` or ``"bottom"`` third of the image."""
        return ("top", "middle", "bottom")[min(2, int(self.y * 3))]


@dataclass(frozen=True)
class Background:
    """A background texture: ``kind`` in :data:`BACKGROUNDS`, two greyish RGB colours, a texture period (pixels
    at 64 px, scaled with the image) and the amplitude of the pixel noise added on top."""

    kind: str
    colour_a: tuple[int, int, int]
    colour_b: tuple[int, int, int]
    period: int
    noise: float


@dataclass(frozen=True)
class Scene:
    """A theme, a background and the exact list of objects, in drawing order (later objects on top)."""

    theme: str
    background: Background
    objects: tuple[Shape, ...] = field(default_factory=tuple)

    def shapes_present(self) -> set[str]:
        """Kinds of shape in the scene."""
        return {o.shape for o in self.objects}

    def count(self, shape: str) -> int:
        """How many objects of kind ``shape``."""
        return sum(o.shape == shape for o in self.objects)

    def to_dict(self) -> dict:
        """Plain, JSON-ready description (the ground truth written beside each image)."""
        return asdict(self)


def sample_background(rng: np.random.Generator) -> Background:
    """A random muted background, so that every object colour stays visible on it."""
    base = rng.integers(40, 110)
    colour_a = tuple(int(base + d) for d in rng.integers(-15, 16, size=3))
    colour_b = tuple(int(base + 25 + d) for d in rng.integers(-15, 16, size=3))
    return Background(kind=str(rng.choice(BACKGROUNDS)), colour_a=colour_a, colour_b=colour_b,
                      period=int(rng.integers(4, 12)), noise=float(rng.uniform(2.0, 12.0)))


def sample_shape(rng: np.random.Generator, theme: str, size_range: tuple[float, float] = (0.16, 0.34)) -> Shape:
    """One object: its kind from the theme group with :data:`THEME_PROBABILITY`, otherwise from all shapes."""
    pool = THEMES[theme] if rng.random() < THEME_PROBABILITY else SHAPES
    size = float(rng.uniform(*size_range))
    margin = size / 2
    return Shape(shape=str(rng.choice(pool)), colour=str(rng.choice(list(COLOURS))),
                 x=float(rng.uniform(margin, 1 - margin)), y=float(rng.uniform(margin, 1 - margin)), size=size,
                 rotation=float(rng.uniform(0, 360)))


def sample_scene(rng: np.random.Generator, theme: str | None = None, min_objects: int = 1,
                 max_objects: int = 4) -> Scene:
    """A random scene with ``min_objects``..``max_objects`` objects (overlap allowed, as in real photos)."""
    theme = theme or str(rng.choice(list(THEMES)))
    if theme not in THEMES:
        raise ValueError(f"unknown theme {theme!r}; available: {', '.join(THEMES)}")
    count = int(rng.integers(min_objects, max_objects + 1))
    background = sample_background(rng)
    objects: list[Shape] = []
    for _ in range(_PLACEMENT_TRIES * count):
        if len(objects) == count:
            break
        candidate = sample_shape(rng, theme)
        if all(_separated(candidate, other) for other in objects):
            objects.append(candidate)
    return Scene(theme=theme, background=background, objects=tuple(objects))


def _separated(a: Shape, b: Shape) -> bool:
    """Objects may overlap, but never so much that one hides the other (the ground truth must stay visible)."""
    return math.hypot(a.x - b.x, a.y - b.y) >= MIN_SEPARATION * (a.size + b.size) / 2


def _polygon(shape: str, cx: float, cy: float, r: float, rotation: float) -> list[tuple[float, float]]:
    """Vertices of the polygonal shapes, radius ``r`` around ``(cx, cy)``."""
    def ring(points: int, radius: float, offset: float = 0.0) -> list[tuple[float, float]]:
        return [(cx + radius * math.cos(math.radians(rotation + offset + 360 * i / points)),
                 cy + radius * math.sin(math.radians(rotation + offset + 360 * i / points))) for i in range(points)]

    if shape == "triangle":
        return ring(3, r)
    if shape == "square":
        return ring(4, r, 45)
    if shape == "diamond":
        pts = ring(4, r)
        return [(cx + (x - cx) * 0.6, y) if i % 2 == 0 else (x, y) for i, (x, y) in enumerate(pts)]
    if shape == "hexagon":
        return ring(6, r)
    if shape == "star":
        outer, inner = ring(5, r, -90), ring(5, r * 0.45, -54)
        return [p for pair in zip(outer, inner, strict=True) for p in pair]
    if shape == "cross":
        w = r * 0.38
        arms = [(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r), (-w, w), (-r, w), (-r, -w),
                (-w, -w)]
        c, s = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in arms]
    raise ValueError(f"{shape!r} is not a polygon")


def _draw_background(background: Background, size: int) -> np.ndarray:
    a = np.array(background.colour_a, dtype=np.float32)
    b = np.array(background.colour_b, dtype=np.float32)
    period = max(2, round(background.period * size / 64))
    ys, xs = np.mgrid[0:size, 0:size]
    if background.kind == "plain":
        weight = np.zeros((size, size), dtype=np.float32)
    elif background.kind == "stripes":
        weight = ((xs + ys) // period % 2).astype(np.float32)
    elif background.kind == "checker":
        weight = ((xs // period + ys // period) % 2).astype(np.float32)
    else:  # gradient
        weight = (ys / max(1, size - 1)).astype(np.float32)
    return a * (1 - weight[..., None]) + b * weight[..., None]


def _draw_objects(draw: ImageDraw.ImageDraw, objects: tuple[Shape, ...], size: int, fills: list) -> None:
    """Draw ``objects`` in order, object ``i`` filled with ``fills[i]`` (an RGB colour or a label value)."""
    for obj, fill in zip(objects, fills, strict=True):
        cx, cy, r = obj.x * size, obj.y * size, obj.size * size / 2
        box = (cx - r, cy - r, cx + r, cy + r)
        if obj.shape == "circle":
            draw.ellipse(box, fill=fill)
        elif obj.shape == "ring":
            draw.ellipse(box, outline=fill, width=max(2, round(r * 0.4)))
        else:
            draw.polygon(_polygon(obj.shape, cx, cy, r, obj.rotation), fill=fill)


def render_scene(scene: Scene, size: int = WORLD_SIZE, seed: int = 0) -> Image.Image:
    """Draw ``scene`` as a ``size`` x ``size`` RGB image; ``seed`` drives the pixel noise only."""
    canvas = Image.fromarray(_draw_background(scene.background, size).clip(0, 255).astype(np.uint8), mode="RGB")
    _draw_objects(ImageDraw.Draw(canvas), scene.objects, size, [COLOURS[o.colour] for o in scene.objects])
    noise = np.random.default_rng(seed).normal(0.0, scene.background.noise, size=(size, size, 3))
    pixels = np.asarray(canvas, dtype=np.float32) + noise
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8), mode="RGB")


def render_labels(scene: Scene, size: int = WORLD_SIZE) -> np.ndarray:
    """``(size, size)`` uint8 map of which object each pixel shows: ``i + 1`` for ``scene.objects[i]``, 0 for
    background — the exact ground truth behind every pixel of :func:`render_scene`, e.g. to tell which visual tokens
    cover an object."""
    canvas = Image.new("L", (size, size), 0)
    _draw_objects(ImageDraw.Draw(canvas), scene.objects, size, [i + 1 for i in range(len(scene.objects))])
    return np.asarray(canvas, dtype=np.uint8)


def patch_labels(scene: Scene, size: int, patch: int, min_fraction: float = 0.25) -> np.ndarray:
    """``(size // patch, size // patch)`` map of the object each ``patch`` x ``patch`` patch mostly shows (``i + 1``,
    or 0 when no object covers at least ``min_fraction`` of the patch), in the row-major order of ViT patches."""
    labels = render_labels(scene, size)
    grid = size // patch
    one_hot = np.eye(len(scene.objects) + 1, dtype=np.int32)[labels[:grid * patch, :grid * patch]]
    counts = one_hot.reshape(grid, patch, grid, patch, -1).sum(axis=(1, 3))
    counts[..., 0] = 0
    best = counts.argmax(-1)
    covered = counts.max(-1) >= min_fraction * patch * patch
    return np.where(covered, best, 0).astype(np.uint8)
