"""Shapes-world evaluation sets: deterministic, and in the exact column layouts of lmms-lab/POPE, lmms-lab/MME and
lmms-lab/Video-MME."""

import io
from collections import defaultdict

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmaccel.zoo.world import sample_scene
from mmaccel.zoo.world.build import DURATION_FRAMES, build_mme, build_pope, build_videomme
from mmaccel.zoo.world.tasks import POPE_SPLITS, caption, mme_pair, pope_negatives, shape_statistics

POPE_COLUMNS = ["id", "question_id", "question", "answer", "image_source", "category", "image"]
MME_COLUMNS = ["question_id", "image", "question", "answer", "category"]
VIDEOMME_COLUMNS = ["video_id", "duration", "domain", "sub_category", "url", "videoID", "question_id", "task_type",
                    "question", "options", "answer"]


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    build_pope(root / "POPE", num_images=20, seed=5, size=48)
    build_mme(root / "MME", images_per_category=6, seed=6, size=48)
    build_videomme(root / "Video-MME", videos_per_duration=2, seed=7, size=32)
    return root


def test_same_seed_same_content(sets, tmp_path):
    build_pope(tmp_path / "POPE", num_images=20, seed=5, size=48)
    for split in POPE_SPLITS:
        name = f"Full/{split}-00000-of-00001.parquet"
        assert pq.read_table(tmp_path / "POPE" / name).equals(pq.read_table(sets / "POPE" / name))


def test_pope_layout(sets):
    pooled = pq.read_table(sets / "POPE" / "data" / "test-00000-of-00001.parquet").to_pylist()
    assert len({row["id"] for row in pooled}) == len(pooled)
    total = 0
    for split in POPE_SPLITS:
        table = pq.read_table(sets / "POPE" / "Full" / f"{split}-00000-of-00001.parquet")
        assert table.column_names == POPE_COLUMNS
        rows = table.to_pylist()
        total += len(rows)
        assert [row["question_id"] for row in rows] == [str(i) for i in range(len(rows))]  # restarts per split
        assert {row["category"] for row in rows} == {split}
        per_image = defaultdict(list)
        for row in rows:
            assert row["answer"] in ("yes", "no") and row["question"].startswith("Is there a ")
            per_image[row["image_source"]].append(row["answer"])
        assert all(answers.count("yes") == answers.count("no") for answers in per_image.values())
        image = Image.open(io.BytesIO(rows[0]["image"]["bytes"]))
        assert image.size == (48, 48) and rows[0]["image"]["path"].endswith(".png")
    assert total == len(pooled)


def test_pope_ground_truth_and_splits():
    scenes = [sample_scene(np.random.default_rng(s)) for s in range(200)]
    frequency, pairs = shape_statistics(scenes)
    scene = scenes[0]
    for split in POPE_SPLITS:
        negatives = pope_negatives(scene, split, 3, frequency, pairs, np.random.default_rng(0))
        assert not set(negatives) & scene.shapes_present()
    popular = pope_negatives(scene, "popular", 1, frequency, pairs, np.random.default_rng(0))[0]
    absent = [s for s in frequency if s not in scene.shapes_present()]
    assert frequency[popular] == max(frequency[s] for s in absent)


def test_mme_layout_two_questions_per_image(sets):
    table = pq.read_table(sets / "MME" / "data" / "test-00000-of-00001.parquet")
    assert table.column_names == MME_COLUMNS
    by_image = defaultdict(list)
    for row in table.to_pylist():
        assert row["question"].endswith(" Please answer yes or no.")
        by_image[(row["category"], row["question_id"])].append(row["answer"])
    assert {category for category, _ in by_image} == {"existence", "count", "position", "color"}
    assert all(sorted(answers) == ["No", "Yes"] for answers in by_image.values())


def test_mme_answers_are_true_of_the_scene():
    for seed in range(40):
        rng = np.random.default_rng(seed)
        scene = sample_scene(rng)
        existence = mme_pair(scene, "existence", rng)
        yes_shape = existence[0][0].split("Is there a ")[1].split(" in")[0]
        no_shape = existence[1][0].split("Is there a ")[1].split(" in")[0]
        assert yes_shape in scene.shapes_present() and no_shape not in scene.shapes_present()
        colour_yes = mme_pair(scene, "color", rng)[0][0].split("Is there a ")[1].split(" in")[0].split(" ")
        assert any((o.colour, o.shape) == tuple(colour_yes) for o in scene.objects)
        assert caption(scene).count(". ") == len(scene.objects) - 1


def test_videomme_layout_and_videos(sets, tmp_path):
    av = pytest.importorskip("av")
    root = sets / "Video-MME"
    table = pq.read_table(root / "videomme" / "test-00000-of-00001.parquet")
    assert table.column_names == VIDEOMME_COLUMNS
    rows = table.to_pylist()
    assert {row["duration"] for row in rows} == set(DURATION_FRAMES)
    assert len({row["question_id"] for row in rows}) == len(rows)
    for row in rows:
        assert row["question_id"].startswith(row["video_id"] + "-")
        assert [option[:3] for option in row["options"]] == ["A. ", "B. ", "C. ", "D. "]
        assert row["answer"] in "ABCD" and len(row["answer"]) == 1
    for row in rows[::3]:
        with av.open(str(root / "data" / f"{row['videoID']}.mp4")) as container:
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        assert len(frames) == DURATION_FRAMES[row["duration"]] and frames[0].shape == (32, 32, 3)
    build_videomme(tmp_path, videos_per_duration=2, seed=7, size=32)
    assert pq.read_table(tmp_path / "videomme" / "test-00000-of-00001.parquet").equals(table)
    first = rows[0]["videoID"] + ".mp4"
    assert (tmp_path / "data" / first).read_bytes() == (root / "data" / first).read_bytes()
