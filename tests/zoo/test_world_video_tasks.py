"""Video-MME-style questions: every answer follows from the timeline, and the prompt is lmms-eval's."""

import numpy as np
import pytest

from mmaccel.zoo.world import sample_video
from mmaccel.zoo.world.video_tasks import (
    LETTERS,
    TASK_TYPES,
    VIDEO_QUESTION_KINDS,
    video_question,
    video_questions,
    videomme_prompt,
)


def _right_text(question):
    return question.options[LETTERS.index(question.answer)][3:-1]


@pytest.mark.parametrize("kind", VIDEO_QUESTION_KINDS)
def test_answers_follow_from_the_timeline(kind):
    asked = 0
    for seed in range(120):
        rng = np.random.default_rng(seed)
        video = sample_video(rng, num_frames=8)
        question = video_question(video, kind, rng)
        if question is None:
            continue
        asked += 1
        texts = [option[3:-1] for option in question.options]
        assert [option[:3] for option in question.options] == ["A. ", "B. ", "C. ", "D. "]
        assert len(set(texts)) == 4 and question.task_type == TASK_TYPES[kind]
        right = _right_text(question)
        if kind == "count":
            assert right == str(len(video.tracks))
            continue
        named = [t for t in video.tracks if t.shape == right] if kind != "change" else \
            [t for t in video.tracks if t.new_colour == right]
        assert len(named) == 1
        track = named[0]
        others = [t for t in video.tracks if t is not track]
        if kind == "first":
            assert all(track.appear < t.appear for t in others)
        elif kind == "last":
            assert all(track.appear > t.appear for t in others)
        elif kind == "moved":
            assert track.moves and not any(t.moves for t in others)
        elif kind == "left":
            assert track.leave < video.num_frames and all(t.leave == video.num_frames for t in others)
        else:
            assert track.change_at is not None and question.question == f"What colour does the {track.shape} change to?"
    assert asked >= 15  # every kind is answerable about a fair share of videos


def test_several_kinds_per_video_and_lmms_eval_prompt():
    rng = np.random.default_rng(0)
    questions = video_questions(sample_video(rng, num_frames=8), rng, first="count")
    assert questions[0].kind == "count" and len({q.kind for q in questions}) == len(questions) == 3
    prompt = videomme_prompt("Which shape moves during the video?", ["A. star.", "B. ring.", "C. cross.", "D. square."])
    assert prompt == (
        "Select the best answer to the following multiple-choice question based on the video and the subtitles. "
        "Respond with only the letter (A, B, C, or D) of the correct option.\n"
        "Which shape moves during the video?\nA. star.\nB. ring.\nC. cross.\nD. square.\n"
        "\nAnswer with the option's letter from the given choices directly.")


def test_answerable_videos_are_drawn_for_every_kind_and_impossible_ones_are_named():
    from mmaccel.zoo.world.video_tasks import VIDEO_QUESTION_KINDS, sample_answerable_video, video_question

    rng = np.random.default_rng(3)
    for kind in VIDEO_QUESTION_KINDS:
        for frames in (3, 8):
            video = sample_answerable_video(rng, kind, frames)
            assert video.num_frames == frames and video_question(video, kind, np.random.default_rng(0)) is not None
    with pytest.raises(ValueError, match="no 2-frame video answered a 'change' question in 50 draws"):
        sample_answerable_video(rng, "change", 2, attempts=50)
