"""Frames of a video file at a target frame rate."""

from pathlib import Path

import numpy as np
import pytest

from mmaccel.stream import sources
from mmaccel.stream.sources import VideoSourceError, video_frames
from tests.eval.fixtures import numbered_frames, write_video

try:
    import decord  # noqa: F401
    READERS = ["pyav", "decord"]
except ImportError:
    READERS = ["pyav"]


@pytest.mark.parametrize("reader", READERS)
def test_frames_are_taken_at_the_target_rate_with_their_timestamps(tmp_path: Path, reader, monkeypatch):
    if reader == "pyav":  # as where decord is not installed
        monkeypatch.setattr(sources, "_decord_frames", sources._pyav_frames)
    path = tmp_path / "clip.mp4"
    write_video(path, numbered_frames(16, size=32), fps=8)  # two seconds
    pairs = list(video_frames(path, fps=2))
    assert [round(t, 3) for _, t in pairs] == [0.0, 0.5, 1.0, 1.5]
    assert all(frame.shape == (32, 32, 3) and frame.dtype == np.uint8 for frame, _ in pairs)
    assert [round(float(frame.mean()) / 10) for frame, _ in pairs] == [0, 4, 8, 12]  # which frames they were
    assert len(list(video_frames(path, fps=100))) == 16  # never more than the file has
    assert len(list(video_frames(path, fps=8, max_frames=5))) == 5


def test_missing_and_broken_files_are_named(tmp_path: Path):
    with pytest.raises(VideoSourceError, match="does not exist"):
        list(video_frames(tmp_path / "nope.mp4"))
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 100)
    with pytest.raises(VideoSourceError, match="broken.mp4"):
        list(video_frames(broken))
