import zipfile
from pathlib import Path

import numpy as np
import pytest

from mmaccel.eval.common import MediaError
from mmaccel.eval.video import VideoFolder, frame_indices, read_frames
from mmaccel.eval.videomme import VideoMme, extract_answer_letter, videomme_prompt
from tests.eval.fixtures import numbered_frames, write_video, write_videomme


@pytest.mark.parametrize("text, letter", [
    ("B", "B"), ("The answer is (B).", "B"), ("(C) three", "C"), ("The best answer is: D", "D"),
    ("All of them", "A"),  # the official regex takes the capital A of "All"
    ("the video shows many things happening one after another in the scene today", ""),
    ("I don't know", ""), ("", ""),
    ("The best option isThe correct option is C", "C"),  # the official list's glued prefixes
    ("The correct option is C", "C"),
])
def test_letter_extraction_is_the_official_regex(text, letter):
    assert extract_answer_letter(text) == letter


def test_prompt_is_lmms_evals():
    prompt = videomme_prompt("How many?", ["A. one.", "B. two.", "C. three.", "D. four."])
    assert prompt == (
        "Select the best answer to the following multiple-choice question based on the video and the subtitles. "
        "Respond with only the letter (A, B, C, or D) of the correct option.\nHow many?\n"
        "A. one.\nB. two.\nC. three.\nD. four.\n\nAnswer with the option's letter from the given choices directly.")


def test_frame_indices_are_linspace_with_both_ends():
    assert frame_indices(10, 4).tolist() == [0, 3, 6, 9]
    assert frame_indices(3, 5).tolist() == [0, 0, 1, 1, 2]


def test_read_frames_samples_uniformly(tmp_path: Path):
    path = tmp_path / "v.mp4"
    write_video(path, numbered_frames(10))
    frames = read_frames(path, 4)
    assert frames.shape == (4, 32, 32, 3)
    assert [int(round(f.mean() / 10)) for f in frames] == [0, 3, 6, 9]


def test_videos_are_found_in_zip_chunks_and_missing_or_corrupt_ones_raise(tmp_path: Path):
    write_video(tmp_path / "loose" / "clip.mp4", numbered_frames(5))
    with zipfile.ZipFile(tmp_path / "videos_chunked_01.zip", "w") as archive:
        archive.write(tmp_path / "loose" / "clip.mp4", "data/clip.mp4")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "broken.mp4").write_bytes(b"\x00" * 100)
    folder = VideoFolder(tmp_path)
    assert folder.find("clip") == (tmp_path / "videos_chunked_01.zip", "data/clip.mp4")
    frames = folder.frames("clip", 3)
    assert [int(round(f.mean() / 10)) for f in frames] == [0, 2, 4]
    with pytest.raises(MediaError, match="'absent' is neither"):
        folder.frames("absent", 3)
    with pytest.raises(MediaError, match="broken.mp4"):
        folder.frames("broken", 3)


def test_load_and_metrics_both_denominators(tmp_path: Path):
    root = write_videomme(tmp_path / "Video-MME")
    task = VideoMme()
    samples = task.load(root, frames=4)
    assert [s.key for s in samples] == ["001-1", "001-2", "002-1", "002-2", "003-1", "003-2"]
    assert samples[0].load_media().shape == (4, 32, 32, 3)
    assert len(task.load(root, limit=1)) == 3
    records = [{"parsed": p, "answer": s.answer, "fields": s.fields}
               for p, s in zip(["A", "A", "", "B", "C", ""], samples, strict=True)]
    m = task.metrics(records)
    assert m["overall"]["accuracy"] == pytest.approx(2 / 6)  # lmms-eval: right / all
    assert m["overall"]["accuracy_answered"] == pytest.approx(2 / 4)  # official: right / answered
    assert m["duration/short"]["accuracy"] == 0.5 and m["duration/medium"]["accuracy"] == 0.5
    assert m["task_type/Counting Problem"]["n"] == 4 and m["overall"]["unanswered"] == 2


def test_numbered_frames_survive_encoding(tmp_path: Path):
    write_video(tmp_path / "x.mp4", numbered_frames(3))
    assert np.array_equal(read_frames(tmp_path / "x.mp4", 3), numbered_frames(3))
