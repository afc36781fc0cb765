"""Audio for the audio-capable family: the first audio stream of an audio file or of a video container, decoded
and resampled to the model's rate with PyAV (the video decoder the project already needs).

torchaudio 2.9 and later decode through TorchCodec, which needs system FFmpeg libraries matching its build; PyAV
ships its own. Features are left to the model's processor (Qwen2.5-Omni's ``WhisperFeatureExtractor``), so they are
exactly those the model was trained on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import MediaError


def read_audio(path: Path, sampling_rate: int = 16_000, max_seconds: float | None = None) -> np.ndarray:
    """The first audio stream of ``path`` (an audio file such as WAV, FLAC, MP3 or M4A, or a video container's
    audio track) as a mono float32 waveform at ``sampling_rate``, cut to ``max_seconds`` if given;
    :class:`MediaError` if the file is missing, cannot be decoded or has no audio."""
    if not path.is_file():
        raise MediaError(f"audio file {path} does not exist")
    try:
        wave = _decode(path, sampling_rate, max_seconds)
    except MediaError:
        raise
    except Exception as err:  # PyAV raises many types on corrupt files
        raise MediaError(f"cannot decode the audio of {path.name} ({err.__class__.__name__}: {err})") from err
    if wave.size == 0:
        raise MediaError(f"{path.name} has an audio track without samples")
    return wave


def _decode(path: Path, sampling_rate: int, max_seconds: float | None) -> np.ndarray:
    import av

    limit = None if max_seconds is None else int(max_seconds * sampling_rate)
    chunks: list[np.ndarray] = []
    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise MediaError(f"{path.name} has no audio track")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sampling_rate)
        for frame in container.decode(audio=0):
            chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
            if limit is not None and sum(len(c) for c in chunks) >= limit:
                break
        else:
            chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    wave = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    return wave[:limit] if limit is not None else wave
