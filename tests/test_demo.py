"""The demo's backend (what the page calls), without a browser: per-user sessions, streamed answers, bad uploads."""

from pathlib import Path

from mmaccel.config import StreamConfig
from mmaccel.demo import NO_FRAMES, DemoBackend, format_stats
from mmaccel.zoo.tiny.media import make_video
from tests.eval.fixtures import write_video


def test_upload_then_ask_grows_the_answer_and_users_have_their_own_sessions(tiny, tmp_path: Path, monkeypatch):
    model, processor = tiny("llava_next_video")
    backend = DemoBackend(model, processor, StreamConfig(method="carrier", recent_frames=2), fps=4,
                          max_new_tokens=6)
    path = tmp_path / "clip.mp4"
    write_video(path, make_video(8, 32, 32, seed=3), fps=4)
    *_, (stats, status, alice) = backend.ingest_video(str(path), None)
    assert "Video ingested (8 frames so far)" in status and "| frames ingested | 8 |" in stats

    monkeypatch.setattr(alice, "ask", lambda question, **kwargs: iter(["a ", "red ", "circle"]))
    updates = list(backend.ask("What is shown?", [], alice))
    answers = [history[-1]["content"] for history, _, _, _ in updates]
    assert answers == ["a ", "a red ", "a red circle", "a red circle"]  # the chat grows piece by piece
    assert updates[-1][0][0] == {"role": "user", "content": "What is shown?"}
    assert "last time to first token" in updates[-1][2]

    history, _, _, bob = list(backend.ask("What is shown?", [], None))[-1]
    assert history[-1]["content"] == NO_FRAMES and bob is not alice

    chat, stats, _, alice = backend.reset(alice)
    assert chat == [] and alice.frames_seen == 0 and stats == format_stats(alice)


def test_a_bad_upload_is_reported_and_the_session_survives(tiny, tmp_path: Path):
    model, processor = tiny("llava_next_video")
    backend = DemoBackend(model, processor, StreamConfig(method="carrier"))
    stats, session = backend.ingest_webcam(make_video(1, 32, 32)[0], None)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    *_, (stats, status, same) = backend.ingest_video(str(broken), session)
    assert status.startswith("Could not read this video") and same is session and session.frames_seen == 1
