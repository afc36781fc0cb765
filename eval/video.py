"""Video files for the video benchmarks: finding them (unpacked, or inside Video-MME's zip chunks) and sampling
frames uniformly, with decord where it is installed and PyAV otherwise.

The sampler is lmms-eval's: ``np.linspace(0, total - 1, count, dtype=int)``, both ends included.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from functools import cached_property
from pathlib import Path

import numpy as np

from .common import MediaError

VIDEO_SUFFIXES = (".mp4", ".MP4", ".mkv", ".webm", ".avi", ".mov")


def frame_indices(total: int, count: int) -> np.ndarray:
    """lmms-eval's uniform sampler: ``count`` indices from 0 to ``total - 1``, both included."""
    return np.linspace(0, total - 1, count, dtype=int)


def decoder_name() -> str:
    """``"decord"`` when decord imports, else ``"pyav"``: the decoder :func:`read_frames` uses."""
    try:
        import decord  # noqa: F401
    except ImportError:
        return "pyav"
    return "decord"


def read_frames(path: Path, count: int) -> np.ndarray:
    """``count`` frames of the video at ``path``, sampled uniformly, as a ``(count, H, W, 3)`` uint8 array;
    :class:`MediaError` if it is missing or cannot be decoded."""
    if not path.is_file():
        raise MediaError(f"video file {path} does not exist")
    try:
        frames = _read_decord(path, count) if decoder_name() == "decord" else _read_pyav(path, count)
    except MediaError:
        raise
    except Exception as err:  # the decoders raise many types on corrupt files
        raise MediaError(f"cannot decode {path.name} ({err.__class__.__name__}: {err})") from err
    if len(frames) == 0:
        raise MediaError(f"{path.name} has no video frames")
    return frames


def _read_decord(path: Path, count: int) -> np.ndarray:
    from decord import VideoReader, cpu

    reader = VideoReader(str(path), ctx=cpu(0), num_threads=1)
    if len(reader) == 0:
        return np.zeros((0, 1, 1, 3), dtype=np.uint8)
    return reader.get_batch(frame_indices(len(reader), count).tolist()).asnumpy()


def _read_pyav(path: Path, count: int) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        total = container.streams.video[0].frames
    if total <= 0:  # some containers do not store the frame count: count by decoding
        with av.open(str(path)) as container:
            total = sum(1 for _ in container.decode(video=0))
    if total == 0:
        return np.zeros((0, 1, 1, 3), dtype=np.uint8)
    wanted = frame_indices(total, count)
    picked: dict[int, np.ndarray] = {}
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index > wanted[-1]:
                break
            if index in wanted:
                picked[index] = frame.to_ndarray(format="rgb24")
    last = max(picked) if picked else None
    if last is None:
        raise MediaError(f"{path.name}: no frame could be decoded")
    # A stored count larger than the decodable frames: repeat the last decoded frame, as a short read would.
    return np.stack([picked.get(int(i), picked[last]) for i in wanted])


class VideoFolder:
    """Where a dataset's videos are: ``<root>/data/<videoID>.<ext>`` (or ``<root>/<videoID>.<ext>``), or members
    of the ``*.zip`` chunks in ``root`` (Video-MME's ``videos_chunked_NN.zip``), extracted one at a time to a
    temporary file that is deleted after reading."""

    def __init__(self, root: Path):
        self.root = root

    @cached_property
    def _zip_members(self) -> dict[str, tuple[Path, str]]:
        members: dict[str, tuple[Path, str]] = {}
        for archive in sorted(self.root.glob("*.zip")):
            try:
                with zipfile.ZipFile(archive) as handle:
                    for name in handle.namelist():
                        stem, suffix = Path(name).stem, Path(name).suffix
                        if suffix in VIDEO_SUFFIXES:
                            members.setdefault(stem, (archive, name))
            except zipfile.BadZipFile:
                continue
        return members

    def find(self, video_id: str) -> Path | tuple[Path, str] | None:
        """The file of ``video_id``, or ``(zip, member)``, or ``None``."""
        for folder in (self.root / "data", self.root):
            for suffix in VIDEO_SUFFIXES:
                path = folder / f"{video_id}{suffix}"
                if path.is_file():
                    return path
        return self._zip_members.get(video_id)

    def frames(self, video_id: str, count: int) -> np.ndarray:
        """``count`` uniformly sampled frames of ``video_id``; :class:`MediaError` if it is missing or corrupt."""
        where = self.find(video_id)
        if where is None:
            raise MediaError(f"video {video_id!r} is neither in {self.root / 'data'} nor in a zip chunk in "
                             f"{self.root}")
        if isinstance(where, Path):
            return read_frames(where, count)
        archive, member = where
        with tempfile.TemporaryDirectory(prefix="mmaccel-video-") as tmp:
            target = Path(tmp) / Path(member).name
            try:
                with zipfile.ZipFile(archive) as handle, handle.open(member) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst)
            except (zipfile.BadZipFile, OSError) as err:
                raise MediaError(f"cannot extract {member} from {archive.name} ({err})") from err
            return read_frames(target, count)
