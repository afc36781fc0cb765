"""Write shapes-world evaluation sets in the real benchmarks' file layouts.

``python -m mmaccel.zoo.world.build --out data/shapes --seed 1000`` writes::

    <out>/POPE/Full/{random,popular,adversarial}-00000-of-00001.parquet   (lmms-lab/POPE, config "Full")
    <out>/POPE/data/test-00000-of-00001.parquet                          (config "default": the three pooled)
    <out>/POPE/scenes.jsonl                                              (ground truth: objects, caption)
    <out>/MME/data/test-00000-of-00001.parquet                           (lmms-lab/MME)
    <out>/MME/scenes.jsonl
    <out>/Video-MME/videomme/test-00000-of-00001.parquet                 (lmms-lab/Video-MME, config "videomme")
    <out>/Video-MME/data/<videoID>.mp4                                   (the unpacked video zips)
    <out>/Video-MME/videos.jsonl                                         (ground truth: tracks and timeline)

Video durations are frame counts (short 8, medium 16, long 32 frames at 4 fps) over 8-state timelines, each state
held for 1, 2 or 4 frames: lmms-eval's uniform sampler at 8 frames sees every state of every video. Writing videos
needs PyAV (``pip install av``).

Images are embedded as ``{"bytes": <PNG>, "path": <name>}`` structs, as the Hugging Face datasets store them.
Same arguments, same bytes.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .scenes import WORLD_SIZE, Scene, render_scene, sample_scene
from .tasks import MME_CATEGORIES, POPE_SPLITS, caption, mme_pair, pope_rows
from .video_tasks import VIDEO_QUESTION_KINDS, sample_answerable_video, video_questions
from .videos import render_video

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
#: Frames per video of each Video-MME duration; every video has ``VIDEO_STATES`` states on its timeline.
DURATION_FRAMES = {"short": 8, "medium": 16, "long": 32}
VIDEO_STATES = 8
VIDEO_FPS = 4


def png_bytes(scene: Scene, size: int, seed: int) -> bytes:
    """The rendered scene as PNG bytes."""
    buffer = io.BytesIO()
    render_scene(scene, size=size, seed=seed).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def mp4_bytes(frames: np.ndarray, fps: int = VIDEO_FPS) -> bytes:
    """``(T, H, W, 3)`` uint8 frames as an H.264 MP4: quantiser 0 and 4:4:4 chroma, so the only loss is the RGB/YUV
    conversion (about half a level on average); one encoder thread, so the bytes are reproducible."""
    try:
        import av
    except ImportError as error:
        raise ImportError("writing the Video-MME-layout set needs PyAV: pip install av") from error
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps, options={"qp": "0", "preset": "medium"})
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv444p"
        stream.thread_count = 1
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def _write_table(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = {key: [row[key] for row in rows] for key in rows[0]} if rows else {}

    def arrow_type(key: str) -> pa.DataType:
        return IMAGE_TYPE if key == "image" else pa.list_(pa.string()) if key == "options" else pa.string()

    pq.write_table(pa.table({key: pa.array(values, type=arrow_type(key)) for key, values in columns.items()}), path)


def _write_scenes(scenes: list[Scene], names: list[str], path: Path) -> None:
    with path.open("w") as handle:
        for name, scene in zip(names, scenes, strict=True):
            handle.write(json.dumps({"image": name, "caption": caption(scene), **scene.to_dict()}) + "\n")


def build_pope(out: Path, num_images: int, seed: int, size: int = WORLD_SIZE) -> dict[str, int]:
    """Write the POPE-layout set; returns rows per split."""
    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng) for _ in range(num_images)]
    names = [f"shapes_{seed}_{i:06d}.png" for i in range(num_images)]
    images = [{"bytes": png_bytes(s, size, seed * 100003 + i), "path": n} for i, (s, n) in
              enumerate(zip(scenes, names, strict=True))]
    rows = pope_rows(scenes, np.random.default_rng(seed + 1))
    pooled = []
    for split in POPE_SPLITS:
        table = []
        for number, row in enumerate(rows[split]):
            table.append({"id": str(len(pooled) + len(table)), "question_id": str(number), "question": row["question"],
                          "answer": row["answer"], "image_source": names[row["image_index"]].removesuffix(".png"),
                          "category": split, "image": images[row["image_index"]]})
        _write_table(table, out / "Full" / f"{split}-00000-of-00001.parquet")
        pooled.extend(table)
    _write_table(pooled, out / "data" / "test-00000-of-00001.parquet")
    _write_scenes(scenes, names, out / "scenes.jsonl")
    return {split: len(rows[split]) for split in POPE_SPLITS}


def build_mme(out: Path, images_per_category: int, seed: int, size: int = WORLD_SIZE) -> dict[str, int]:
    """Write the MME-layout set (existence, count, position, color; two questions per image)."""
    rng = np.random.default_rng(seed)
    table, scenes, names = [], [], []
    counts = {}
    for category in MME_CATEGORIES:
        made = 0
        while made < images_per_category:
            scene = sample_scene(rng)
            pair = mme_pair(scene, category, rng)
            if pair is None:
                continue
            name = f"{category}/{made:04d}.png"
            image = {"bytes": png_bytes(scene, size, seed * 100003 + len(scenes)), "path": name}
            for question, answer in pair:
                table.append({"question_id": name, "image": image, "question": question, "answer": answer,
                              "category": category})
            scenes.append(scene)
            names.append(name)
            made += 1
        counts[category] = 2 * made
    _write_table(table, out / "data" / "test-00000-of-00001.parquet")
    _write_scenes(scenes, names, out / "scenes.jsonl")
    return counts


def build_videomme(out: Path, videos_per_duration: int, seed: int, size: int = WORLD_SIZE) -> dict[str, int]:
    """Write the Video-MME-layout set: three questions of different kinds per video, the first kind taken in turn
    (a video is redrawn until it can answer it), so every kind is well represented; returns rows per duration."""
    rng = np.random.default_rng(seed)
    rows, records, counts = [], [], {}
    (out / "data").mkdir(parents=True, exist_ok=True)
    for duration, frames in DURATION_FRAMES.items():
        counts[duration] = 0
        for _ in range(videos_per_duration):
            first = VIDEO_QUESTION_KINDS[len(records) % len(VIDEO_QUESTION_KINDS)]
            video = sample_answerable_video(rng, first, VIDEO_STATES)
            questions = video_questions(video, rng, first=first)
            number = len(records) + 1
            video_id = f"shapes_{seed}_{number:04d}"
            pixels = render_video(video, size=size, seed=seed * 100003 + number, num_frames=frames)
            (out / "data" / f"{video_id}.mp4").write_bytes(mp4_bytes(pixels))
            for index, question in enumerate(questions, start=1):
                rows.append({"video_id": f"{number:03d}", "duration": duration, "domain": "Shapes world",
                             "sub_category": video.theme, "url": "", "videoID": video_id,
                             "question_id": f"{number:03d}-{index}", "task_type": question.task_type,
                             "question": question.question, "options": list(question.options),
                             "answer": question.answer})
            counts[duration] += len(questions)
            records.append({"videoID": video_id, "duration": duration, "frames": frames, **video.to_dict()})
    _write_table(rows, out / "videomme" / "test-00000-of-00001.parquet")
    with (out / "videos.jsonl").open("w") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    return counts


def main(argv: list[str] | None = None) -> int:
    """Command line: write the POPE- and MME-layout sets under ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=1000, help="held-out sets use seeds the training never sees")
    parser.add_argument("--pope-images", type=int, default=500)
    parser.add_argument("--mme-images", type=int, default=100, help="images per MME category")
    parser.add_argument("--videos", type=int, default=100, help="videos per Video-MME duration (0: no video set)")
    parser.add_argument("--size", type=int, default=WORLD_SIZE,
                        help="image and frame side in pixels (the reference models' input size)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    pope = build_pope(out / "POPE", args.pope_images, args.seed, args.size)
    mme = build_mme(out / "MME", args.mme_images, args.seed + 7, args.size)
    summary = {"out": str(out), "pope_rows": pope, "mme_rows": mme}
    if args.videos:
        summary["videomme_rows"] = build_videomme(out / "Video-MME", args.videos, args.seed + 13, args.size)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
