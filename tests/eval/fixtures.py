"""Small datasets in the exact layouts of lmms-lab/POPE, lmms-lab/MME and lmms-lab/Video-MME, written by tests."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def png(seed: int, size: int = 32) -> bytes:
    """A small random RGB image as PNG bytes."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def write_parquet(rows: list[dict], path: Path) -> None:
    """Rows to a parquet file; an ``image`` column is written as HF's Image struct."""
    columns = {key: [row[key] for row in rows] for key in rows[0]}
    arrays = {key: pa.array(values, type=IMAGE_TYPE if key == "image" else None) for key, values in columns.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(arrays), path)


def pope_rows(per_split: int = 4, corrupt: int | None = None) -> list[dict]:
    """POPE rows: ``per_split`` per split, alternating yes/no; row ``corrupt`` gets undecodable image bytes."""
    rows = []
    for split in ("adversarial", "popular", "random"):
        for number in range(per_split):
            index = len(rows)
            rows.append({"id": str(index), "question_id": str(number + 1),
                         "question": f"Is there a thing{number} in the image?",
                         "answer": "yes" if number % 2 == 0 else "no", "image_source": f"COCO_val2014_{index:012d}",
                         "category": split,
                         "image": {"bytes": b"not an image" if index == corrupt else png(index), "path": None}})
    return rows


def write_pope(root: Path, per_split: int = 4, corrupt: int | None = None) -> Path:
    """``root`` with ``data/test-00000-of-00001.parquet`` (pooled) and ``Full/<split>-00000-of-00001.parquet``."""
    rows = pope_rows(per_split, corrupt)
    write_parquet(rows, root / "data" / "test-00000-of-00001.parquet")
    for split in ("adversarial", "popular", "random"):
        write_parquet([r for r in rows if r["category"] == split], root / "Full" / f"{split}-00000-of-00001.parquet")
    return root


def write_mme(root: Path, images_per_category: int = 2) -> Path:
    """MME layout: one yes and one no question per image, in two shards as the real repo has several."""
    rows = []
    for category in ("existence", "count", "code_reasoning"):
        for number in range(images_per_category):
            image = png(len(rows))
            for answer in ("Yes", "No"):
                rows.append({"question_id": f"{category}/{number:04d}.png", "image": {"bytes": image, "path": None},
                             "question": f"Is it {answer.lower()}? Please answer yes or no.", "answer": answer,
                             "category": category})
    half = len(rows) // 2
    write_parquet(rows[:half], root / "data" / "test-00000-of-00002-abc.parquet")
    write_parquet(rows[half:], root / "data" / "test-00001-of-00002-abc.parquet")
    return root


def write_video(path: Path, frames: np.ndarray, fps: int = 4, pix_fmt: str = "yuv444p") -> None:
    """``frames`` (T, H, W, 3 uint8) as an H.264 MP4 (lossless, so decoded frames equal the input; browsers play
    only ``pix_fmt="yuv420p"``, which is not lossless)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = pix_fmt
        stream.options = {"qp": "0", "threads": "1"}
        for pixels in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def numbered_frames(count: int, size: int = 32) -> np.ndarray:
    """Frames whose every pixel holds the frame number × 10, so a decoded frame says which it was."""
    return np.stack([np.full((size, size, 3), 10 * i, dtype=np.uint8) for i in range(count)])


def write_videomme(root: Path, missing: str | None = None) -> Path:
    """Video-MME layout: ``videomme/test-00000-of-00001.parquet`` and ``data/<videoID>.mp4`` (one per duration;
    ``missing`` names a videoID whose file is not written)."""
    rows = []
    for number, (duration, task_type) in enumerate((("short", "Counting Problem"), ("medium", "Temporal Reasoning"),
                                                    ("long", "Counting Problem"))):
        video_id = f"vid{number}"
        if video_id != missing:
            write_video(root / "data" / f"{video_id}.mp4", numbered_frames(6 + 2 * number))
        for index, answer in enumerate("AB"):
            rows.append({"video_id": f"{number + 1:03d}", "duration": duration, "domain": "Knowledge",
                         "sub_category": "Astronomy", "url": "", "videoID": video_id,
                         "question_id": f"{number + 1:03d}-{index + 1}", "task_type": task_type,
                         "question": f"Question {index}?", "options": ["A. one.", "B. two.", "C. three.", "D. four."],
                         "answer": answer})
    write_parquet(rows, root / "videomme" / "test-00000-of-00001.parquet")
    return root
