"""Frame sources for streaming sessions: a video file sampled at a target frame rate (decord where it is installed,
PyAV otherwise), decoded lazily so that a long file never sits in memory whole."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np


class VideoSourceError(ValueError):
    """A video file that is missing or cannot be decoded."""


def video_frames(path: str | Path, fps: float = 1.0, max_frames: int | None = None
                 ) -> Iterator[tuple[np.ndarray, float]]:
    """``(frame, timestamp in seconds)`` pairs of the video at ``path``, about ``fps`` per second of video (every
    frame when the file has fewer), as ``(H, W, 3)`` uint8 arrays. Raises :class:`VideoSourceError` for a file that
    is missing or that no decoder can read."""
    path = Path(path)
    if not path.is_file():
        raise VideoSourceError(f"video file {path} does not exist")
    if fps <= 0:
        raise VideoSourceError(f"fps={fps} must be positive")
    try:
        import decord  # noqa: F401
    except ImportError:
        reader = _pyav_frames
    else:
        reader = _decord_frames
    count = 0
    try:
        for frame, timestamp in reader(path, fps):
            yield frame, timestamp
            count += 1
            if max_frames is not None and count >= max_frames:
                return
    except VideoSourceError:
        raise
    except Exception as err:  # the decoders raise many types on files they cannot read
        raise VideoSourceError(f"cannot decode {path.name} ({err.__class__.__name__}: {err})") from err
    if count == 0:
        raise VideoSourceError(f"{path.name} has no video frames")


def _decord_frames(path: Path, fps: float) -> Iterator[tuple[np.ndarray, float]]:
    from decord import VideoReader, cpu

    reader = VideoReader(str(path), ctx=cpu(0), num_threads=1)
    native = float(reader.get_avg_fps()) or fps
    step = max(1.0, native / fps)
    for index in np.arange(0, len(reader), step).astype(int):
        yield reader[int(index)].asnumpy(), float(index) / native


def _pyav_frames(path: Path, fps: float) -> Iterator[tuple[np.ndarray, float]]:
    import av

    next_time = 0.0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for index, frame in enumerate(container.decode(stream)):
            rate = float(stream.average_rate or fps)
            timestamp = float(frame.time) if frame.time is not None else index / rate
            if timestamp + 1e-6 >= next_time:
                yield frame.to_ndarray(format="rgb24"), timestamp
                next_time += 1.0 / fps
