"""``mmaccel stream-bench``: carrier-token streaming against dense streaming and a dense prefill, in one process.

1. **Memory and ingest time while streaming.** The frames of one long generated video (shapes-world clips, one
   after another) stream into a session with the given configuration and into a dense one (``method="none"``:
   frames prefilled once and kept whole). At each checkpoint the table gives the memory the session holds (its KV
   cache) plus the transient peak of ingesting the next frame, the tokens in the cache and the mean ingest time per
   frame since the previous checkpoint. A PNG plots memory and ingest time against frames seen.
2. **Answer latency.** After ``--latency-frames`` frames, the session's time from question to first answer token
   (the frames are already in its cache, as they are in a live stream) against ``generate`` on the same frames as
   one video: vision encoding and a dense prefill of every frame, to its first token. Medians of ``--repeats``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import StreamConfig
from ..memory import tensor_bytes, track_peak_memory
from .session import StreamSession

QUESTION = ("How many different shapes appear in the video?\nA. 1.\nB. 2.\nC. 3.\nD. 4.\n"
            "Answer with the option's letter.")


def long_video(frames: int, size: int, seed: int = 0) -> np.ndarray:
    """``(frames, size, size, 3)`` uint8: shapes-world clips of 8 frames, one after another."""
    from ..zoo.world import render_video, sample_video

    rng = np.random.default_rng(seed)
    clips = [render_video(sample_video(rng, num_frames=8), size=size, seed=index)
             for index in range(-(-frames // 8))]
    return np.concatenate(clips)[:frames]


def memory_sweep(model: Any, processor: Any, config: StreamConfig, frames: np.ndarray, checkpoints: list[int]
                 ) -> list[dict[str, Any]]:
    """Stream ``frames`` into a session one at a time; one row per checkpoint (see the module docstring)."""
    device = next(model.parameters()).device
    session = StreamSession(model, processor, config)
    rows, since, elapsed = [], 0, 0.0
    for index, frame in enumerate(frames):
        seen = index + 1
        measure = seen in checkpoints
        held = tensor_bytes(session.cache) if measure else 0
        start = time.perf_counter()
        if measure:
            with track_peak_memory(device) as memory:
                session.add_frames([frame])
        else:
            session.add_frames([frame])
        elapsed += time.perf_counter() - start
        since += 1
        if measure:
            stats = session.stats()
            rows.append({"frames": seen, "peak_memory_mb": (held + memory["peak_bytes"]) / 2**20,
                         "kv_mb": stats["kv_bytes"] / 2**20, "tokens_in_cache": stats["tokens_in_cache"],
                         "ingest_ms_per_frame": 1e3 * elapsed / since})
            since, elapsed = 0, 0.0
    return rows


def answer_latency(model: Any, processor: Any, config: StreamConfig, frames: np.ndarray, repeats: int
                   ) -> dict[str, float]:
    """Median seconds to the first answer token: a session holding ``frames`` vs a dense prefill of them."""
    from ..bench import timed_generate
    from ..eval.runner import build_inputs

    device = next(model.parameters()).device
    session = StreamSession(model, processor, config)
    session.add_frames(frames)
    streamed = []
    for _ in range(repeats):
        "".join(session.ask(QUESTION, max_new_tokens=4))
        streamed.append(session.last_ttft_s)
    inputs = build_inputs(processor, "video", frames, QUESTION, device)
    dense = []
    with torch.no_grad():
        for _ in range(repeats):
            _, ttft, _, _ = timed_generate(model, inputs, max_new_tokens=4, do_sample=False)
            dense.append(ttft)
    stream_s, dense_s = statistics.median(streamed), statistics.median(dense)
    return {"frames": len(frames), "stream_ttft_s": stream_s, "dense_ttft_s": dense_s,
            "dense_over_stream": dense_s / stream_s, "stream_tokens_in_cache": session.stats()["tokens_in_cache"],
            "dense_prompt_tokens": int(inputs["input_ids"].shape[1])}


def plot(sweeps: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    """A PNG with two panels against frames seen: memory (MB) and ingest time (ms per frame), one line per
    session, drawn with Pillow."""
    from PIL import Image, ImageDraw

    width, panel, margin = 760, 300, 70
    image = Image.new("RGB", (width, 2 * panel + 40), "white")
    draw = ImageDraw.Draw(image)
    colours = [(200, 40, 40), (40, 90, 200), (30, 150, 60)]
    for row, (key, label) in enumerate((("peak_memory_mb", "peak memory (MB)"),
                                        ("ingest_ms_per_frame", "ingest time (ms per frame)"))):
        top = 20 + row * panel
        box = (margin, top + 20, width - 20, top + panel - margin // 2)
        xs = [r["frames"] for rows in sweeps.values() for r in rows]
        ys = [r[key] for rows in sweeps.values() for r in rows] + [0.0]
        x_max, y_max = max(xs), max(ys) * 1.1 or 1.0

        def at(x: float, y: float, box: tuple = box, x_max: float = x_max, y_max: float = y_max) -> tuple:
            return (box[0] + (box[2] - box[0]) * x / x_max, box[3] - (box[3] - box[1]) * y / y_max)

        draw.rectangle(box, outline="black")
        draw.text((margin, top), label, fill="black")
        for tick in (0.0, y_max / 2, y_max):
            draw.text((5, at(0, tick)[1] - 6), f"{tick:.1f}", fill="black")
        for tick in sorted({r["frames"] for rows in sweeps.values() for r in rows}):
            draw.text((at(tick, 0)[0] - 8, box[3] + 4), str(tick), fill="black")
        for index, (name, rows) in enumerate(sweeps.items()):
            colour = colours[index % len(colours)]
            points = [at(r["frames"], r[key]) for r in rows]
            draw.line(points, fill=colour, width=2)
            for x, y in points:
                draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)
            draw.text((box[0] + 10, box[1] + 8 + 14 * index), name, fill=colour)
        draw.text((width // 2 - 40, box[3] + 18), "frames seen", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def main(argv: list[str] | None = None) -> int:
    """Run both measurements, print them, write ``OUT/stream_bench.json`` and ``OUT/stream_memory.png``."""
    from ..config import AccelConfig
    from ..models import load_model, resolve_dtype

    parser = argparse.ArgumentParser(prog="mmaccel stream-bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shapes-video", help="a built-in name or local directory of a "
                                                                 "LLaVA-NeXT-Video or LLaVA-OneVision model")
    parser.add_argument("--preset", default="stream", help="preset whose stream section the session uses")
    parser.add_argument("--frames", type=int, default=256, help="frames streamed in the memory sweep")
    parser.add_argument("--latency-frames", type=int, default=64, help="frames before the question is asked")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    config = AccelConfig.resolve(args.preset).stream
    device = torch.device(args.device)
    model, processor = load_model(args.model, device=device, dtype=resolve_dtype("auto", device))
    size = processor.video_processor.crop_size["height"]
    frames = long_video(max(args.frames, args.latency_frames), size)
    checkpoints = [n for n in (16, 32, 64, 128, 256, 512, 1024) if n <= args.frames]
    label = Path(args.preset).stem if args.preset.endswith(".json") else args.preset
    sweeps = {f"stream ({label})": memory_sweep(model, processor, config, frames[:args.frames], checkpoints),
              "dense stream": memory_sweep(model, processor, StreamConfig(), frames[:args.frames], checkpoints)}
    latency = answer_latency(model, processor, config, frames[:args.latency_frames], args.repeats)
    print(f"{'session':<22}{'frames':>8}{'peak MB':>10}{'KV MB':>9}{'tokens':>8}{'ingest ms/frame':>17}")
    for name, rows in sweeps.items():
        for r in rows:
            print(f"{name:<22}{r['frames']:>8}{r['peak_memory_mb']:>10.2f}{r['kv_mb']:>9.2f}"
                  f"{r['tokens_in_cache']:>8}{r['ingest_ms_per_frame']:>17.1f}")
    print(f"answer after {latency['frames']} frames: stream {1e3 * latency['stream_ttft_s']:.1f} ms "
          f"({latency['stream_tokens_in_cache']} cached tokens), dense prefill {1e3 * latency['dense_ttft_s']:.1f} "
          f"ms ({latency['dense_prompt_tokens']} prompt tokens): {latency['dense_over_stream']:.1f}x")
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"model": args.model, "preset": args.preset, "config": config.__dict__, "sweeps": sweeps,
              "latency": latency, "device": str(device)}
    (args.out / "stream_bench.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out / 'stream_bench.json'}")
    print(f"wrote {plot(sweeps, args.out / 'stream_memory.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
