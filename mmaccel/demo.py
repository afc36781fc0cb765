"""The streaming video chat demo (``mmaccel demo`` or ``python demos/video_chat.py``), built with Gradio.

Upload a video or start the webcam: frames are ingested continuously into a :func:`mmaccel.stream` session (one per
browser session), while the chat answers questions about what was seen so far, token by token. Beside it, live
statistics: frames ingested and remembered, tokens in the KV cache against what a dense cache would hold, KV
megabytes, the last answer's time to first token and the ingest time per frame.

One model serves every user; a lock lets one forward run at a time, so users queue rather than collide. The server
binds to 127.0.0.1 unless told otherwise and serves no local file beyond what users upload and what it writes.
A video that cannot be decoded is reported in the page; the session and the server go on.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .config import AccelConfig, StreamConfig
from .eval.videomme import videomme_prompt
from .stream import StreamSession
from .stream.sources import VideoSourceError, video_frames

#: Frames ingested per session update while a video file is read.
FRAMES_PER_UPDATE = 4
NO_FRAMES = "No frames yet: upload a video or start the webcam first."
UNREADABLE_VIDEO = "Could not read this video"
#: The bundled ``shapes-video`` model was trained on Video-MME's prompt only (it rambles on other wordings), so the
#: page offers that prompt to edit: the six kinds of question are in ``mmaccel.zoo.world.video_tasks``.
SHAPES_VIDEO_EXAMPLES = (
    videomme_prompt("Which shape is the first to appear in the video?",
                    ("A. square.", "B. star.", "C. cross.", "D. hexagon.")),
    videomme_prompt("How many objects appear in the video in total?", ("A. 1.", "B. 2.", "C. 3.", "D. 4.")),
    videomme_prompt("Which shape leaves the video before the end?",
                    ("A. circle.", "B. square.", "C. triangle.", "D. cross.")),
)


def format_stats(session: StreamSession | None) -> str:
    """The statistics panel, as Markdown."""
    if session is None or session.frames_seen == 0:
        return "frames ingested: 0"
    stats = session.stats()
    dense = stats["tokens_in_cache"] - stats["visual_tokens_kept"] + stats["visual_tokens_seen"]
    ttft = f"{1e3 * stats['last_ttft_s']:.0f} ms" if stats["last_ttft_s"] is not None else "-"
    ingest = f"{1e3 * stats['ingest_s_per_frame']:.0f} ms" if stats["ingest_s_per_frame"] is not None else "-"
    return "\n".join([
        f"| frames ingested | {stats['frames_seen']} |", "|---|---|",
        f"| frames remembered | {stats['frames_remembered']} |",
        f"| tokens in cache (dense) | {stats['tokens_in_cache']} ({dense}) |",
        f"| KV cache | {stats['kv_bytes'] / 2**20:.2f} MB |",
        f"| last time to first token | {ttft} |",
        f"| ingest per frame | {ingest} |",
    ])


class DemoBackend:
    """What the page calls: sessions per user over one shared model (the Gradio wiring is in :func:`build_demo`)."""

    def __init__(self, model: Any, processor: Any, config: StreamConfig, fps: float = 1.0,
                 max_new_tokens: int = 64):
        self.model, self.processor, self.config = model, processor, config
        self.fps, self.max_new_tokens = fps, max_new_tokens
        self.lock = threading.Lock()

    def session(self, state: StreamSession | None) -> StreamSession:
        """The user's session, made on first use."""
        return state if state is not None else StreamSession(self.model, self.processor, self.config)

    def ingest_video(self, path: str | None, state: StreamSession | None) -> Iterator[tuple[str, str, Any]]:
        """Read an uploaded video at the demo's fps into the user's session, a few frames at a time; yields
        ``(stats, status, state)``. A file that cannot be decoded leaves the session as it was."""
        session = self.session(state)
        if not path:
            yield format_stats(session), "", session
            return
        batch: list[np.ndarray] = []
        stamps: list[float] = []
        try:
            for frame, timestamp in video_frames(path, self.fps):
                batch.append(frame)
                stamps.append(timestamp)
                if len(batch) == FRAMES_PER_UPDATE:
                    self._add(session, batch, stamps)
                    batch, stamps = [], []
                    yield format_stats(session), "Reading the video…", session
            if batch:
                self._add(session, batch, stamps)
        except VideoSourceError as err:
            yield format_stats(session), f"{UNREADABLE_VIDEO}: {err}", session
            return
        yield format_stats(session), f"Video ingested ({session.frames_seen} frames so far).", session

    def ingest_webcam(self, frame: np.ndarray | None, state: StreamSession | None) -> tuple[str, Any]:
        """One webcam frame into the user's session; returns ``(stats, state)``."""
        session = self.session(state)
        if frame is not None:
            self._add(session, [np.asarray(frame)[..., :3]], None)
        return format_stats(session), session

    def ask(self, question: str, history: list[dict] | None, state: StreamSession | None
            ) -> Iterator[tuple[list[dict], str, str, Any]]:
        """Answer ``question`` token by token; yields ``(chat history, cleared textbox, stats, state)``."""
        session = self.session(state)
        history = list(history or [])
        question = (question or "").strip()
        if not question:
            yield history, "", format_stats(session), session
            return
        history.append({"role": "user", "content": question})
        if session.frames_seen == 0:
            history.append({"role": "assistant", "content": NO_FRAMES})
            yield history, "", format_stats(session), session
            return
        history.append({"role": "assistant", "content": ""})
        with self.lock:
            for piece in session.ask(question, max_new_tokens=self.max_new_tokens):
                history[-1] = {"role": "assistant", "content": history[-1]["content"] + piece}
                yield list(history), "", format_stats(session), session
        yield history, "", format_stats(session), session

    def reset(self, state: StreamSession | None) -> tuple[list, str, str, Any]:
        """Forget the user's stream and chat."""
        session = self.session(state)
        with self.lock:
            session.reset()
        return [], format_stats(session), "", session

    def _add(self, session: StreamSession, frames: list[np.ndarray], stamps: list[float] | None) -> None:
        with self.lock:
            session.add_frames(frames, stamps)


def build_demo(backend: DemoBackend, examples: Sequence[str] = ()) -> Any:
    """The Gradio page (a ``gr.Blocks``) over ``backend``; ``examples`` are questions offered under the textbox."""
    import gradio as gr

    with gr.Blocks(title="mmaccel streaming video chat") as demo:
        gr.Markdown("## mmaccel streaming video chat\nUpload a video or start the webcam, then ask about what it "
                    "showed. Each frame is read once; a carrier token keeps what it meant.")
        state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                video = gr.Video(sources=["upload"], label="video file", elem_id="video")
                webcam = gr.Image(sources=["webcam"], streaming=True, label="webcam", elem_id="webcam")
                status = gr.Markdown(elem_id="status")
                stats = gr.Markdown(format_stats(None), elem_id="stats")
                reset = gr.Button("Reset", elem_id="reset")
            with gr.Column(scale=2):
                chat = gr.Chatbot(label="chat", height=420, elem_id="chat")
                question = gr.Textbox(label="question", placeholder="Ask about the video and press Enter",
                                      elem_id="question")
                if examples:
                    gr.Examples([[text] for text in examples], inputs=[question],
                                label="questions in the prompt the model was trained on (edit the options)")

        def ingest(path: str | None, user_session: StreamSession | None) -> Iterator[tuple[str, str, Any, Any]]:
            # An unreadable file is taken off the player, so the upload box is back for the next try.
            for stats_text, status_text, session in backend.ingest_video(path, user_session):
                cleared = None if status_text.startswith(UNREADABLE_VIDEO) else gr.skip()
                yield stats_text, status_text, session, cleared

        video.upload(ingest, [video, state], [stats, status, state, video])
        webcam.stream(backend.ingest_webcam, [webcam, state], [stats, state], stream_every=0.5, time_limit=600)
        question.submit(backend.ask, [question, chat, state], [chat, question, stats, state])
        reset.click(backend.reset, [state], [chat, stats, status, state])
    return demo


def main(argv: list[str] | None = None) -> int:
    """Load the model and serve the demo until interrupted."""
    from .models import load_model, resolve_dtype

    parser = argparse.ArgumentParser(prog="mmaccel demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shapes-video",
                        help="a built-in name or a local LLaVA-NeXT-Video / LLaVA-OneVision directory")
    parser.add_argument("--preset", default="stream", help="preset (or JSON file) whose stream section sessions use")
    parser.add_argument("--recent-frames", type=int, default=8,
                        help="newest frames kept whole beside the carriers (default 8: the bundled video model was "
                             "trained on 8-frame clips); memory stays bounded")
    parser.add_argument("--fps", type=float, default=2.0, help="frames per second read from uploaded videos")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args(argv)

    import torch

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    model, processor = load_model(args.model, device=device, dtype=resolve_dtype("auto", device))
    config = AccelConfig.resolve(args.preset).stream
    if not config.enabled:
        config = StreamConfig(method="carrier")
    config = StreamConfig.from_value({**config.__dict__, "recent_frames": args.recent_frames})
    backend = DemoBackend(model, processor, config, fps=args.fps, max_new_tokens=args.max_new_tokens)
    demo = build_demo(backend, SHAPES_VIDEO_EXAMPLES if args.model == "shapes-video" else ())
    demo.queue(default_concurrency_limit=8)
    print(f"mmaccel demo: model={args.model} stream={config.method} on http://{args.host}:{args.port}", flush=True)
    import gradio as gr

    # System fonts: the default theme would fetch web fonts, which an offline machine waits for.
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])
    demo.launch(server_name=args.host, server_port=args.port, share=False, show_error=True, theme=theme)
    return 0
