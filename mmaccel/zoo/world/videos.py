"""Shapes-world videos: objects that appear, leave, move and change colour, with the exact timeline."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .scenes import (
    COLOURS,
    THEMES,
    WORLD_SIZE,
    Background,
    Scene,
    Shape,
    render_scene,
    sample_background,
    sample_shape,
)


@dataclass(frozen=True)
class Track:
    """One object over time: present in frames ``[appear, leave)``, moving linearly from ``start`` to ``end``;
    from frame ``change_at`` on (if set) its colour is ``new_colour``."""

    shape: str
    colour: str
    size: float
    start: tuple[float, float]
    end: tuple[float, float]
    appear: int
    leave: int
    change_at: int | None = None
    new_colour: str | None = None

    @property
    def moves(self) -> bool:
        """Whether the object changes place."""
        return self.start != self.end

    def at(self, frame: int) -> Shape | None:
        """The object as drawn in ``frame``, or ``None`` when it is absent."""
        if not self.appear <= frame < self.leave:
            return None
        t = (frame - self.appear) / max(1, self.leave - 1 - self.appear)
        x = self.start[0] + t * (self.end[0] - self.start[0])
        y = self.start[1] + t * (self.end[1] - self.start[1])
        colour = self.new_colour if self.change_at is not None and frame >= self.change_at else self.colour
        return Shape(self.shape, colour, x, y, self.size)


@dataclass(frozen=True)
class VideoScene:
    """A theme, a background, a frame count and the tracks of every object."""

    theme: str
    background: Background
    num_frames: int
    tracks: tuple[Track, ...] = field(default_factory=tuple)

    def frame(self, index: int) -> Scene:
        """The still scene of frame ``index``."""
        objects = tuple(s for s in (t.at(index) for t in self.tracks) if s is not None)
        return Scene(theme=self.theme, background=self.background, objects=objects)

    def events(self) -> list[dict]:
        """The timeline, ordered by frame: ``appear``, ``leave`` and ``change`` events, each with its track."""
        events = []
        for index, track in enumerate(self.tracks):
            events.append({"frame": track.appear, "event": "appear", "track": index})
            if track.leave < self.num_frames:
                events.append({"frame": track.leave, "event": "leave", "track": index})
            if track.change_at is not None:
                events.append({"frame": track.change_at, "event": "change", "track": index})
        return sorted(events, key=lambda e: (e["frame"], e["track"], e["event"]))

    def to_dict(self) -> dict:
        """Plain, JSON-ready description, including the timeline."""
        return {**asdict(self), "events": self.events()}


def sample_video(rng: np.random.Generator, num_frames: int = 8, theme: str | None = None, min_tracks: int = 2,
                 max_tracks: int = 4) -> VideoScene:
    """A random video: the first object is there from frame 0; the others appear later, some leave early, about
    half move and about a quarter change colour once."""
    if num_frames < 2:
        raise ValueError(f"num_frames={num_frames} must be at least 2")
    theme = theme or str(rng.choice(list(THEMES)))
    tracks = []
    for index in range(int(rng.integers(min_tracks, max_tracks + 1))):
        base = sample_shape(rng, theme, size_range=(0.16, 0.28))
        appear = 0 if index == 0 else int(rng.integers(0, num_frames - 1))
        leave = num_frames if rng.random() < 0.6 else int(rng.integers(appear + 1, num_frames + 1))
        end = (base.x, base.y)
        if rng.random() < 0.5:
            margin = base.size / 2
            end = (float(rng.uniform(margin, 1 - margin)), float(rng.uniform(margin, 1 - margin)))
        change_at, new_colour = None, None
        if leave - appear >= 3 and rng.random() < 0.25:
            change_at = int(rng.integers(appear + 1, leave))
            new_colour = str(rng.choice([c for c in COLOURS if c != base.colour]))
        tracks.append(Track(base.shape, base.colour, base.size, (base.x, base.y), end, appear, leave, change_at,
                            new_colour))
    return VideoScene(theme=theme, background=sample_background(rng), num_frames=num_frames, tracks=tuple(tracks))


def render_video(video: VideoScene, size: int = WORLD_SIZE, seed: int = 0,
                 num_frames: int | None = None) -> np.ndarray:
    """``(num_frames, size, size, 3)`` uint8 frames; ``seed`` drives the per-frame pixel noise only.

    ``num_frames`` (default: one per state of the timeline) may be a multiple of ``video.num_frames``: each state is
    then held for several frames, so a longer video has the same events, and uniform sampling of
    ``video.num_frames`` frames (``np.linspace(0, n - 1, k, dtype=int)``, as lmms-eval samples) sees every state."""
    num_frames = num_frames or video.num_frames
    if num_frames % video.num_frames:
        raise ValueError(f"num_frames={num_frames} must be a multiple of the video's {video.num_frames} states")
    hold = num_frames // video.num_frames
    return np.stack([np.asarray(render_scene(video.frame(f // hold), size=size, seed=seed * 1009 + f))
                     for f in range(num_frames)])
