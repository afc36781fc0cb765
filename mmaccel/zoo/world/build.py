"""Write shapes-world evaluation sets in the real benchmarks' file layouts.

``python -m mmaccel.zoo.world.build --out data/shapes --seed 1000`` writes::

    <out>/POPE/Full/{random,popular,adversarial}-00000-of-00001.parquet   (lmms-lab/POPE, config "Full")
    <out>/POPE/data/test-00000-of-00001.parquet                          (config "default": the three pooled)
    <out>/POPE/scenes.jsonl                                              (ground truth: objects, caption)
    <out>/MME/data/test-00000-of-00001.parquet                           (lmms-lab/MME)
    <out>/MME/scenes.jsonl

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

from .scenes import Scene, render_scene, sample_scene
from .tasks import MME_CATEGORIES, POPE_SPLITS, caption, mme_pair, pope_rows

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def png_bytes(scene: Scene, size: int, seed: int) -> bytes:
    """The rendered scene as PNG bytes."""
    buffer = io.BytesIO()
    render_scene(scene, size=size, seed=seed).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def _write_table(rows: list[dict], path: Path, image_column: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = {key: [row[key] for row in rows] for key in rows[0]} if rows else {}
    arrays = {key: pa.array(values, type=IMAGE_TYPE if key == "image" else pa.string())
              for key, values in columns.items()}
    pq.write_table(pa.table(arrays), path)


def _write_scenes(scenes: list[Scene], names: list[str], path: Path) -> None:
    with path.open("w") as handle:
        for name, scene in zip(names, scenes, strict=True):
            handle.write(json.dumps({"image": name, "caption": caption(scene), **scene.to_dict()}) + "\n")


def build_pope(out: Path, num_images: int, seed: int, size: int = 64) -> dict[str, int]:
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


def build_mme(out: Path, images_per_category: int, seed: int, size: int = 64) -> dict[str, int]:
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


def main(argv: list[str] | None = None) -> int:
    """Command line: write the POPE- and MME-layout sets under ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=1000, help="held-out sets use seeds the training never sees")
    parser.add_argument("--pope-images", type=int, default=500)
    parser.add_argument("--mme-images", type=int, default=100, help="images per MME category")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    args = parser.parse_args(argv)
    out = Path(args.out)
    pope = build_pope(out / "POPE", args.pope_images, args.seed, args.size)
    mme = build_mme(out / "MME", args.mme_images, args.seed + 7, args.size)
    print(json.dumps({"out": str(out), "pope_rows": pope, "mme_rows": mme}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
