"""Audio from files and from video containers, into the audio-visual tiny model and fork-merge decoding."""

import wave

import av
import numpy as np
import pytest
import torch

from mmaccel import accelerate, restore
from mmaccel.eval.audio import read_audio
from mmaccel.eval.common import MediaError
from mmaccel.eval.runner import build_inputs
from mmaccel.eval.video import read_frames

TONE_HZ = 440.0


def _tone(seconds: float, rate: int) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * TONE_HZ * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


def _video_with_sound(path, seconds=1.0, rate=44_100, fps=8):
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        audio = container.add_stream("aac", rate=rate)
        audio.layout = "mono"
        for index in range(int(seconds * fps)):
            pixels = np.full((32, 32, 3), index * 20, np.uint8)
            container.mux(video.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        samples = _tone(seconds, rate)
        step = 1024
        for start in range(0, len(samples), step):
            frame = av.AudioFrame.from_ndarray(samples[None, start:start + step], format="flt", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            container.mux(audio.encode(frame))
        container.mux(audio.encode(None))
        container.mux(video.encode(None))


def _dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()])


def test_a_wav_file_is_resampled_to_mono_at_the_model_rate(tmp_path):
    path = tmp_path / "tone.wav"
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(2)
        handle.setsampwidth(2)
        handle.setframerate(48_000)
        tone = (_tone(0.5, 48_000) * 32767).astype(np.int16)
        handle.writeframes(np.stack([tone, tone], axis=1).tobytes())
    samples = read_audio(path, sampling_rate=16_000)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) - 8_000) <= 64
    assert _dominant_hz(samples, 16_000) == pytest.approx(TONE_HZ, abs=4)
    assert len(read_audio(path, 16_000, max_seconds=0.25)) == 4_000


def test_the_sound_track_of_a_video_container(tmp_path):
    path = tmp_path / "clip.mp4"
    _video_with_sound(path)
    samples = read_audio(path, sampling_rate=16_000)
    assert abs(len(samples) - 16_000) <= 2_048  # the AAC encoder pads a frame or two
    assert _dominant_hz(samples, 16_000) == pytest.approx(TONE_HZ, abs=4)


def test_missing_or_silent_files_are_named(tmp_path):
    with pytest.raises(MediaError, match="does not exist"):
        read_audio(tmp_path / "none.wav")
    mute = tmp_path / "mute.mp4"
    with av.open(str(mute), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        container.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")))
        container.mux(stream.encode(None))
    with pytest.raises(MediaError, match="has no audio track"):
        read_audio(mute)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    with pytest.raises(MediaError, match="cannot decode the audio of bad.wav"):
        read_audio(bad)


def test_a_video_file_with_sound_goes_through_fork_merge_end_to_end(tiny, tmp_path):
    model, processor = tiny("qwen2_5_omni_thinker")
    path = tmp_path / "clip.mp4"
    _video_with_sound(path)
    frames = read_frames(path, 4)
    sound = read_audio(path, processor.feature_extractor.sampling_rate, max_seconds=1.0)
    inputs = build_inputs(processor, "video", frames, "What do you see and hear?", torch.device("cpu"), audio=sound)
    assert (inputs["input_ids"] == processor.tokenizer.convert_tokens_to_ids(processor.audio_token)).sum() > 0
    kwargs = dict(max_new_tokens=4, min_new_tokens=4, do_sample=False)
    with torch.no_grad():
        try:
            accelerate(model, contrast={"method": "fork_merge", "fork_layers": 1})
            out = model.generate(**inputs, **kwargs)
        finally:
            restore(model)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 4
