"""Four-option temporal questions about shapes-world videos, in the layout of Video-MME (lmms-lab/Video-MME).

Each kind of question has exactly one right option, decided from the video's timeline, and a Video-MME task type:

=========  ==========================================================  =====================
kind       question                                                    Video-MME task type
=========  ==========================================================  =====================
first      Which shape is the first to appear in the video?            Temporal Reasoning
last       Which shape is the last to appear in the video?             Temporal Reasoning
moved      Which shape moves during the video?                         Action Recognition
left       Which shape leaves the video before the end?                Temporal Perception
count      How many objects appear in the video in total?              Counting Problem
change     What colour does the <shape> change to?                     Attribute Perception
=========  ==========================================================  =====================

Wrong options are shapes (or colours, numbers) drawn first from the video itself, so that a model must follow the
timeline rather than spot which shapes are there at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ...eval.videomme import videomme_prompt
from .scenes import COLOURS, SHAPES
from .tasks import SHORT_ANSWER_PROMPT
from .videos import Track, VideoScene, sample_video

VIDEO_QUESTION_KINDS = ("first", "last", "moved", "left", "count", "change")
TASK_TYPES = {"first": "Temporal Reasoning", "last": "Temporal Reasoning", "moved": "Action Recognition",
              "left": "Temporal Perception", "count": "Counting Problem", "change": "Attribute Perception"}
LETTERS = "ABCD"
#: The word of each kind's question that says what it asks for, which a ``kind_first`` answer repeats first.
KIND_WORDS = {"first": "first", "last": "last", "moved": "moves", "left": "leaves", "count": "many",
              "change": "change"}


@dataclass(frozen=True)
class VideoQuestion:
    """A question, its four options in Video-MME's form (``"A. circle."``), the right letter and the task type."""

    kind: str
    question: str
    options: tuple[str, ...]
    answer: str

    @property
    def task_type(self) -> str:
        """Video-MME's name for this kind of question."""
        return TASK_TYPES[self.kind]


_OPTION_TEXT = re.compile(r"^[ABCD]\. (.*)\.$")


def option_text(question: VideoQuestion) -> str:
    """The text of the right option (``"circle"`` for ``"B. circle."``)."""
    match = _OPTION_TEXT.match(question.options[LETTERS.index(question.answer)])
    if match is None:
        raise ValueError(f"not an option in Video-MME's form: {question.options}")
    return match.group(1)


def video_qa_turns(questions: list[VideoQuestion], rng: np.random.Generator, multiple_choice: float = 0.5,
                   name_then_letter: bool = False, kind_first: bool = False) -> list[tuple[str, str]]:
    """(prompt, answer) pairs: each question as lmms-eval's Video-MME prompt (answer: the letter, or with
    ``name_then_letter`` the option's text and then its letter, ``"star: B"``, after the question's word with
    ``kind_first`` as well, :func:`four_option_answer`) with probability ``multiple_choice``, otherwise open-ended
    with the short-answer post-prompt (answer: the option's text)."""
    turns = []
    for question in questions:
        if rng.random() < multiple_choice:
            turns.append((videomme_prompt(question.question, question.options),
                          four_option_answer(question, name_then_letter, kind_first)))
        else:
            turns.append((question.question + SHORT_ANSWER_PROMPT, option_text(question)))
    return turns


def four_option_answer(question: VideoQuestion, name_then_letter: bool = False, kind_first: bool = False) -> str:
    """The answer to ``question`` asked with its four options: the right letter, or with ``name_then_letter`` the
    option's text and then its letter (``"star: B"``), and with ``kind_first`` as well the question's word for what
    it asks before them (``"last star: B"``, :data:`KIND_WORDS`)."""
    if not name_then_letter:
        return question.answer
    named = f"{option_text(question)}: {question.answer}"
    return f"{KIND_WORDS[question.kind]} {named}" if kind_first else named


def answer_letter(answer: str) -> str | None:
    """The letter a :func:`four_option_answer` gives (``"B"`` for ``"B"`` or ``"star: B"``), or
    None for an open-ended answer (option texts are lower-case words and numbers)."""
    words = answer.split()
    return words[-1] if words and words[-1] in tuple(LETTERS) else None


def _unique_track(tracks: list[Track], video: VideoScene) -> Track | None:
    """The only track in ``tracks``, if its shape appears in no other track of the video (so naming it is exact)."""
    if len(tracks) != 1:
        return None
    track = tracks[0]
    return track if sum(t.shape == track.shape for t in video.tracks) == 1 else None


def _extreme_appearance(video: VideoScene, last: bool) -> Track | None:
    times = [t.appear for t in video.tracks]
    target = max(times) if last else min(times)
    return _unique_track([t for t in video.tracks if t.appear == target], video)


def _answer_track(video: VideoScene, kind: str) -> Track | None:
    if kind == "first":
        return _extreme_appearance(video, last=False)
    if kind == "last":
        return _extreme_appearance(video, last=True)
    if kind == "moved":
        return _unique_track([t for t in video.tracks if t.moves], video)
    if kind == "left":
        return _unique_track([t for t in video.tracks if t.leave < video.num_frames], video)
    if kind == "change":
        return _unique_track([t for t in video.tracks if t.change_at is not None], video)
    raise ValueError(f"unknown video question kind {kind!r}; allowed: {', '.join(VIDEO_QUESTION_KINDS)}")


def _shape_distractors(video: VideoScene, answer: str, rng: np.random.Generator) -> list[str]:
    in_video = [s for s in dict.fromkeys(t.shape for t in video.tracks) if s != answer]
    elsewhere = [s for s in SHAPES if s != answer and s not in in_video]
    ranked = list(rng.permutation(in_video)) + list(rng.permutation(elsewhere))
    return [str(s) for s in ranked[:3]]


def video_question(video: VideoScene, kind: str, rng: np.random.Generator) -> VideoQuestion | None:
    """A ``kind`` question about ``video`` (see the module table), or ``None`` when its answer would not be unique."""
    if kind == "count":
        truth = len(video.tracks)
        low = int(rng.integers(max(1, truth - 3), truth + 1))
        choices = [str(n) for n in range(low, low + 4)]
        right = str(truth)
        question = "How many objects appear in the video in total?"
    else:
        track = _answer_track(video, kind)
        if track is None:
            return None
        if kind == "change":
            right = str(track.new_colour)
            others = [c for c in rng.permutation(list(COLOURS)) if c not in (track.colour, track.new_colour)]
            choices = [right, track.colour, *others[:2]]
            question = f"What colour does the {track.shape} change to?"
        else:
            right = track.shape
            choices = [right, *_shape_distractors(video, right, rng)]
            question = {"first": "Which shape is the first to appear in the video?",
                        "last": "Which shape is the last to appear in the video?",
                        "moved": "Which shape moves during the video?",
                        "left": "Which shape leaves the video before the end?"}[kind]
        choices = [str(c) for c in rng.permutation(choices)]
    options = tuple(f"{letter}. {choice}." for letter, choice in zip(LETTERS, choices, strict=True))
    return VideoQuestion(kind, question, options, LETTERS[choices.index(right)])


def sample_answerable_video(rng: np.random.Generator, kind: str, num_frames: int, attempts: int = 10_000
                            ) -> VideoScene:
    """A random video that can answer a ``kind`` question: videos are redrawn until one can, so that kinds with a
    rare answer ("moved", "left", "change") are asked as often as the others. Raises ``ValueError`` after
    ``attempts`` draws (a colour change needs a track of at least 3 frames, so 2-frame videos never have one)."""
    for _ in range(attempts):
        video = sample_video(rng, num_frames=num_frames)
        if video_question(video, kind, np.random.default_rng(0)) is not None:
            return video
    raise ValueError(f"no {num_frames}-frame video answered a {kind!r} question in {attempts} draws")


def video_questions(video: VideoScene, rng: np.random.Generator, count: int = 3,
                    first: str | None = None) -> list[VideoQuestion]:
    """Up to ``count`` questions of different kinds about ``video``: ``first`` (when given and answerable), then the
    other timeline kinds in a random order, and "count" (answerable about any video) only when too few are."""
    timeline = [k for k in VIDEO_QUESTION_KINDS if k not in ("count", first)]
    order = ([first] if first else []) + [str(k) for k in rng.permutation(timeline)]
    order += [] if first == "count" else ["count"]
    questions = []
    for kind in order:
        if len(questions) == count:
            break
        question = video_question(video, kind, rng)
        if question is not None:
            questions.append(question)
    return questions
