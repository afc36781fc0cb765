"""The shapes world: same seed → same bytes; ground truth agrees with what is drawn; timelines are consistent."""

import io

import numpy as np
import pytest

from mmaccel.zoo.world import (
    COLOURS,
    SHAPES,
    THEMES,
    patch_labels,
    render_labels,
    render_scene,
    render_video,
    sample_scene,
    sample_video,
)
from mmaccel.zoo.world.scenes import MIN_SEPARATION


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_world_size_meets_the_brief():
    assert len(SHAPES) >= 8 and len(COLOURS) >= 8
    assert all(set(group) <= set(SHAPES) for group in THEMES.values())


def test_same_seed_same_bytes_and_other_seed_differs():
    first = [_png(render_scene(sample_scene(np.random.default_rng(7)), size=64, seed=7)) for _ in range(2)]
    other = _png(render_scene(sample_scene(np.random.default_rng(8)), size=64, seed=8))
    assert first[0] == first[1] != other
    videos = [render_video(sample_video(np.random.default_rng(7), num_frames=8), size=32, seed=7) for _ in range(2)]
    assert np.array_equal(videos[0], videos[1])


def test_objects_never_hide_each_other_and_themes_shape_the_statistics():
    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng, theme="harbour", max_objects=4) for _ in range(300)]
    in_theme = sum(o.shape in THEMES["harbour"] for s in scenes for o in s.objects)
    total = sum(len(s.objects) for s in scenes)
    assert in_theme / total > 0.75  # 0.8 drawn from the group, plus chance hits from the uniform draw
    for scene in scenes:
        for i, a in enumerate(scene.objects):
            for b in scene.objects[i + 1:]:
                assert np.hypot(a.x - b.x, a.y - b.y) >= MIN_SEPARATION * (a.size + b.size) / 2 - 1e-9


@pytest.mark.parametrize("seed", range(5))
def test_the_top_object_shows_its_colour_at_its_centre(seed):
    scene = sample_scene(np.random.default_rng(seed), min_objects=1, max_objects=3)
    image = np.asarray(render_scene(scene, size=128, seed=seed), dtype=np.float32)
    top = scene.objects[-1]  # drawn last: nothing covers it
    y, x = int(top.y * 128), int(top.x * 128)
    if top.shape == "ring":  # a ring's centre is background: look inside its stroke instead
        x = int(top.x * 128 + 0.8 * top.size * 64)
    patch = image[y - 1:y + 2, x - 1:x + 2].reshape(-1, 3).mean(0)
    assert np.abs(patch - np.array(COLOURS[top.colour])).max() < 3 * scene.background.noise + 10


def test_video_frames_follow_the_timeline():
    video = sample_video(np.random.default_rng(11), num_frames=12, min_tracks=3, max_tracks=4)
    for track in video.tracks:
        for f in range(video.num_frames):
            present = video.frame(f).objects
            drawn = track.at(f)
            assert (drawn is not None) == (track.appear <= f < track.leave)
            if drawn is not None:
                assert drawn in present
                expected = track.new_colour if track.change_at is not None and f >= track.change_at else track.colour
                assert drawn.colour == expected
        if track.moves:
            assert track.at(track.appear).x != track.at(track.leave - 1).x or \
                track.at(track.appear).y != track.at(track.leave - 1).y
    kinds = [e["event"] for e in video.events()]
    assert kinds.count("appear") == len(video.tracks)
    assert [e["frame"] for e in video.events()] == sorted(e["frame"] for e in video.events())
    assert render_video(video, size=32).shape == (12, 32, 32, 3)


@pytest.mark.parametrize("seed", range(4))
def test_label_maps_mark_the_pixels_each_object_paints(seed):
    scene = sample_scene(np.random.default_rng(seed), min_objects=2, max_objects=4)
    labels = render_labels(scene, size=96)
    image = np.asarray(render_scene(scene, size=96, seed=seed), dtype=np.float32)
    assert labels.shape == (96, 96) and set(np.unique(labels)) <= set(range(len(scene.objects) + 1))
    for index, obj in enumerate(scene.objects, start=1):
        mask = labels == index
        assert mask.any()  # overlap never hides an object
        mean = image[mask].mean(0)
        assert np.abs(mean - np.array(COLOURS[obj.colour])).max() < 3 * scene.background.noise + 25
    grid = patch_labels(scene, size=96, patch=8)
    assert grid.shape == (12, 12)
    assert set(np.unique(grid)) - {0} <= set(range(1, len(scene.objects) + 1))


def test_long_videos_hold_each_state_so_uniform_sampling_sees_them_all():
    video = sample_video(np.random.default_rng(3), num_frames=8)
    short = render_video(video, size=32, seed=1)
    long = render_video(video, size=32, seed=1, num_frames=32)
    assert long.shape == (32, 32, 32, 3)
    for frame, state in zip(np.linspace(0, 31, 8, dtype=int), range(8), strict=True):
        assert frame // 4 == state
        # same state, other noise: equal up to the pixel noise
        assert np.abs(long[frame].astype(int) - short[state].astype(int)).mean() < 3 * video.background.noise
    with pytest.raises(ValueError, match="multiple"):
        render_video(video, size=32, num_frames=12)
