"""Train ``shapes-video`` on shapes-world videos, on CPU. The bundled weights' whole recipe is one command,
``python -m mmaccel.zoo.train_video --recipe bundled --out DIR`` (:data:`BUNDLED_ROUNDS`, each round going on from
the one before, the first from the bundled ``shapes-image``; ``--recipe previous`` runs the previous bundled
weights' :data:`PREVIOUS_ROUNDS`); without ``--recipe`` one run with the options given.

The model starts from a ``shapes-image`` (its vision tower, projector and language model load into
LLaVA-NeXT-Video's, which adds 2x2 pooling of each frame); the vision tower stays frozen unless ``--train-vision``.
Every step draws fresh 8-frame videos from a seeded stream (the held-out sets use other seeds) and trains on
conversations of temporal questions, some in lmms-eval's Video-MME prompt (four options, answer a letter, or with
``--name-then-letter`` the option's text and then its letter), the others open-ended (answer a word). The loss is
on answers only, plus helpers: a deep-supervision loss (:class:`TokenProbe`, dropped from the saved model) that
asks every visual token what its object does (over the whole video, or with ``--causal-token-targets`` up to its
own frame, :data:`CAUSAL_TRACK_FLAGS`), an option probe (``--option-probe``, :class:`OptionProbe`), a summary probe
(``--summary-probe``, :class:`SummaryProbe`: the whole timeline, after the video and at every answer) and text-only
letter questions (:func:`letter_batch`), alone for a short warm-up and then beside every video step. With
``--kind-first`` a named answer starts with the question's word for what it asks (``"last star: B"``), so the
position that names the shape holds the question's kind in its own token. A run is deterministic for a given seed
and step count.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..eval.videomme import videomme_prompt
from .reference import VIDEO_FRAMES, WEIGHTS_DIR, build_shapes_video
from .score import answer_video_question
from .training import answer_positions, encode_conversation, pad_right, save_model, train_in_rounds, train_loop
from .world import SHAPES, VideoScene, render_video, sample_video
from .world.scenes import COLOURS, patch_labels
from .world.video_tasks import (
    LETTERS,
    VIDEO_QUESTION_KINDS,
    VideoQuestion,
    answer_letter,
    four_option_answer,
    option_text,
    sample_answerable_video,
    video_qa_turns,
    video_question,
    video_questions,
)
from .world.videos import Track


def sample_questions(rng: np.random.Generator, num_turns: int, first: str | None = None, answerable: bool = False,
                     num_frames: int = VIDEO_FRAMES) -> tuple[VideoScene, list[VideoQuestion]]:
    """A fresh video and up to ``num_turns`` questions of different kinds about it (at least one), the first kind
    ``first`` or drawn uniformly. With ``first`` given or ``answerable``, the video is drawn to answer that kind, as
    the held-out set is built (:func:`~mmaccel.zoo.world.video_tasks.sample_answerable_video`); otherwise any video
    is drawn and a kind it cannot answer gives way to the others (the previous bundled model's recipe, which asks the
    rarely answerable kinds — moved, left, change — less often than the held-out set does)."""
    if first is None and not answerable:
        video = sample_video(rng, num_frames=num_frames)
        return video, video_questions(video, rng, count=num_turns, first=str(rng.choice(VIDEO_QUESTION_KINDS)))
    first = first or str(rng.choice(VIDEO_QUESTION_KINDS))
    video = sample_answerable_video(rng, first, num_frames)
    return video, video_questions(video, rng, count=num_turns, first=first)


def make_batch(processor: Any, rng: np.random.Generator, batch_size: int, num_turns: int,
               balanced_kinds: bool = False, num_frames: int = VIDEO_FRAMES, causal_targets: bool = False,
               multiple_choice: float = 0.5, name_then_letter: bool = False, kind_first: bool = False
               ) -> dict[str, torch.Tensor]:
    """A right-padded batch of fresh ``num_frames``-frame videos with their conversations, and each visual token's
    deep-supervision targets (:func:`token_targets`): ``token_shapes`` and ``token_flags``, ``(batch, frames *
    tokens per frame)``, :data:`CAUSAL_TRACK_FLAGS` with ``causal_targets``; and where each four-option question's
    options are (:func:`option_targets`). ``balanced_kinds``: see ``answerable`` in :func:`sample_questions`;
    ``multiple_choice``: the share of questions asked with four options (the others are open-ended);
    ``name_then_letter``: four-option answers name the option before its letter, after the question's word for what
    it asks with ``kind_first`` as well (:func:`video_qa_turns`)."""
    tokenizer = processor.tokenizer
    size = processor.video_processor.crop_size["height"]
    # LLaVA-NeXT-Video pools 2x2 patches into one visual token: its processor counts video tokens the same way
    # (image tokens // 4), whatever the model config's spatial_pool_stride
    cell = 2 * processor.patch_size
    videos, sequences, shapes, flags, turn_lists, summaries = [], [], [], [], [], []
    for _ in range(batch_size):
        video, questions = sample_questions(rng, num_turns, answerable=balanced_kinds, num_frames=num_frames)
        videos.append(render_video(video, size=size, seed=int(rng.integers(2**31))))
        turns = video_qa_turns(questions, rng, multiple_choice, name_then_letter, kind_first)
        turn_lists.append(turns)
        sequences.append(encode_conversation(tokenizer, turns, (size // cell) ** 2 * len(videos[-1]),
                                             media_token_id=tokenizer.video_token_id))
        token_shapes, token_flags = token_targets(video, size, cell, causal_targets)
        shapes.append(token_shapes)
        flags.append(token_flags)
        summaries.append(video_summary(video))
    pixels = processor.video_processor(videos, return_tensors="pt")["pixel_values_videos"]
    return {**pad_right(sequences, tokenizer.pad_token_id), "pixel_values_videos": pixels,
            "token_shapes": torch.from_numpy(np.stack(shapes)), "token_flags": torch.from_numpy(np.stack(flags)),
            **option_targets(tokenizer, sequences, turn_lists), **summary_targets(tokenizer, sequences, summaries)}


def option_targets(tokenizer: Any, sequences: list[tuple[list[int], list[int]]],
                   turn_lists: list[list[tuple[str, str]]]) -> dict[str, torch.Tensor]:
    """Where each four-option question's options end in the encoded ``sequences`` and which is right:
    ``option_ends`` ``(batch, questions, 4)``, the position of the full stop that closes each option's line (-1:
    none), and ``option_answers`` ``(batch, questions)``, the right option's index (-100: none); the questions are
    the turns answered with a letter, in order."""
    letters = [tokenizer.convert_tokens_to_ids(letter) for letter in LETTERS]
    newline, stop = (tokenizer(text, add_special_tokens=False)["input_ids"] for text in ("\n", "."))
    ends_per_row, answers_per_row = [], []
    for (ids, _), turns in zip(sequences, turn_lists, strict=True):
        starts = [i for i in range(1, len(ids) - 1) if ids[i - 1:i] == newline and ids[i] in letters
                  and ids[i + 1:i + 2] == stop]
        ends = []
        for start in starts:
            end = start + 2
            while end < len(ids) and ids[end:end + 1] != newline:
                end += 1
            ends.append(end - 1)
        answers = [LETTERS.index(letter) for _, answer in turns if (letter := answer_letter(answer)) is not None]
        if len(ends) != 4 * len(answers):
            raise ValueError(f"found {len(ends)} option lines for {len(answers)} four-option questions")
        ends_per_row.append([ends[i:i + 4] for i in range(0, len(ends), 4)])
        answers_per_row.append(answers)
    questions = max(1, max(len(a) for a in answers_per_row))
    option_ends = torch.full((len(sequences), questions, 4), -1, dtype=torch.long)
    option_answers = torch.full((len(sequences), questions), -100, dtype=torch.long)
    for row, (ends, answers) in enumerate(zip(ends_per_row, answers_per_row, strict=True)):
        for question, (positions, answer) in enumerate(zip(ends, answers, strict=True)):
            option_ends[row, question] = torch.tensor(positions)
            option_answers[row, question] = answer
    return {"option_ends": option_ends, "option_answers": option_answers}


#: What :func:`token_targets` tells about the object under a visual token by default: one flag per temporal question
#: kind, over the whole video (the previous bundled model's targets).
TRACK_FLAGS = ("first to appear", "last to appear", "moves", "leaves", "changes colour")
#: What it tells with ``causal=True``: from the frames up to the token's own only.
CAUSAL_TRACK_FLAGS = ("first to appear", "appears in this frame", "has moved", "has changed colour")


def token_targets(video: VideoScene, size: int, cell: int, causal: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per visual token (frame by frame, row-major ``cell`` x ``cell`` cells): the shape of the object it shows
    (index into ``SHAPES``, ``-100`` for background) and that object's flags (``-1`` for background).

    By default the flags are :data:`TRACK_FLAGS`, what the object does over the whole video — what a token would
    need to gather from the other frames for every temporal question. A causal language model's token cannot see
    later frames, though, so before the last frame most of them are out of reach. With ``causal`` they are
    :data:`CAUSAL_TRACK_FLAGS`, decided by the frames up to the token's own: whether the object was the first to
    appear, whether this frame is its first, whether it is elsewhere than where it appeared, whether its colour is
    no longer the one it appeared with; the answer, after the video, would need only find the token that says so."""
    names = CAUSAL_TRACK_FLAGS if causal else TRACK_FLAGS
    grid = size // cell
    shapes = np.full((video.num_frames, grid * grid), -100, np.int64)
    flags = np.full((video.num_frames, grid * grid, len(names)), -1.0, np.float32)
    appear = [t.appear for t in video.tracks]
    for frame in range(video.num_frames):
        present = [t for t in video.tracks if t.at(frame) is not None]
        for token, label in enumerate(patch_labels(video.frame(frame), size, cell).ravel()):
            if not label:
                continue
            track = present[label - 1]
            shapes[frame, token] = SHAPES.index(track.shape)
            if causal:
                here, then = track.at(frame), track.at(track.appear)
                flags[frame, token] = [track.appear == min(appear), frame == track.appear,
                                       (here.x, here.y) != (then.x, then.y), here.colour != then.colour]
            else:
                flags[frame, token] = whole_video_flags(video, track)
    return shapes.ravel(), flags.reshape(-1, len(names))


def whole_video_flags(video: VideoScene, track: Track) -> list[bool]:
    """:data:`TRACK_FLAGS` of one of ``video``'s tracks: what its object does over the whole video."""
    appear = [t.appear for t in video.tracks]
    return [track.appear == min(appear), track.appear == max(appear), track.moves, track.leave < video.num_frames,
            track.change_at is not None]


#: The sets of shapes :func:`video_summary` gives about a whole video: "seen", then one per :data:`TRACK_FLAGS`, in
#: its order.
SUMMARY_SETS = ("seen", "first", "last", "moved", "left", "changed")


def video_summary(video: VideoScene) -> tuple[np.ndarray, int]:
    """What the whole video says, as the targets of :class:`SummaryProbe`: multi-hot flags, one row of
    :data:`SUMMARY_SETS` over ``SHAPES`` each, then the colours that objects change to (over ``COLOURS``), flattened;
    and the number of objects minus one."""
    sets = np.zeros((len(SUMMARY_SETS), len(SHAPES)), np.float32)
    colours = np.zeros(len(COLOURS), np.float32)
    for track in video.tracks:
        rows = np.flatnonzero([True, *whole_video_flags(video, track)])
        sets[rows, SHAPES.index(track.shape)] = 1.0
        if track.change_at is not None:
            colours[list(COLOURS).index(track.new_colour)] = 1.0
    return np.concatenate([sets.ravel(), colours]), len(video.tracks) - 1


def summary_targets(tokenizer: Any, sequences: list[tuple[list[int], list[int]]],
                    summaries: list[tuple[np.ndarray, int]]) -> dict[str, torch.Tensor]:
    """Where :class:`SummaryProbe` reads each conversation — the first token after the video and every position that
    predicts an answer's first token — as ``summary_positions`` ``(batch, positions)`` (-1: none), with the video's
    :func:`video_summary` as ``summary_flags`` and ``summary_count``."""
    video = tokenizer.video_token_id
    rows = []
    for ids, labels in sequences:
        after_video = max(i for i, token in enumerate(ids) if token == video) + 1
        rows.append([after_video, *answer_positions(labels)])
    positions = torch.full((len(rows), max(len(r) for r in rows)), -1, dtype=torch.long)
    for row, places in enumerate(rows):
        positions[row, :len(places)] = torch.tensor(places)
    return {"summary_positions": positions,
            "summary_flags": torch.from_numpy(np.stack([flags for flags, _ in summaries])),
            "summary_count": torch.tensor([count for _, count in summaries])}


class SummaryProbe(torch.nn.Module):
    """Deep supervision, discarded after training: from the hidden state after layer ``layer`` at the first token
    after the video and at every answer's first prediction, predict the whole video's :func:`video_summary` — which
    shapes appeared first and last, moved, left, changed colour (and to what), and how many objects there were. It
    asks the positions that see the whole video to gather the timeline in one place, so that an answer need only
    read the part its question asks for."""

    #: Classes of the object count (1 to 8 objects; videos have up to 4).
    count_classes = 8
    #: The flags' binary cross-entropy is a mean over 56 flags of which about five are set, so it is small beside the
    #: count's cross-entropy and the answers' loss; this weight makes it count.
    flag_weight = 8.0

    def __init__(self, model: Any, layer: int = 3) -> None:
        super().__init__()
        self.layer = layer
        self.flags = len(SUMMARY_SETS) * len(SHAPES) + len(COLOURS)
        self.head = torch.nn.Linear(model.config.text_config.hidden_size, self.flags + self.count_classes)

    def loss(self, hidden_states: tuple[torch.Tensor, ...], positions: torch.Tensor, flags: torch.Tensor,
             count: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy of the flags plus cross-entropy of the count, at every position given."""
        used = positions >= 0
        rows = torch.arange(positions.shape[0])[:, None].expand_as(positions)
        logits = self.head(hidden_states[self.layer][rows[used], positions[used]].float())
        flag_loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits[:, :self.flags], flags[rows[used]])
        return self.flag_weight * flag_loss + torch.nn.functional.cross_entropy(logits[:, self.flags:],
                                                                                  count[rows[used]])


class TokenProbe(torch.nn.Module):
    """Deep supervision, discarded after training: from the language model's hidden state after layer ``layer`` at
    every visual token, predict :func:`token_targets` — the shape the token shows and what its object does. It is
    meant to make the first layers gather, at each object's tokens, what its other frames hold, so that the later
    layers need only find the token that answers. ``num_flags``: how many flags the targets have."""

    def __init__(self, model: Any, layer: int = 2, num_flags: int = len(TRACK_FLAGS)) -> None:
        super().__init__()
        self.layer = layer
        self.num_flags = num_flags
        self.head = torch.nn.Linear(model.config.text_config.hidden_size, len(SHAPES) + num_flags)

    def loss(self, hidden_states: tuple[torch.Tensor, ...], visual: torch.Tensor, shapes: torch.Tensor,
             flags: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the shape plus binary cross-entropy of the flags, over object tokens; ``visual`` marks
        the visual tokens of the batch (as many per row as ``shapes`` has columns)."""
        logits = self.head(hidden_states[self.layer][visual].float())
        shapes, flags = shapes.reshape(-1), flags.reshape(-1, self.num_flags)
        shape_loss = torch.nn.functional.cross_entropy(logits[:, :len(SHAPES)], shapes, ignore_index=-100)
        objects = shapes != -100
        flag_loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[objects, len(SHAPES):], flags[objects])
        return shape_loss + flag_loss


class OptionProbe(torch.nn.Module):
    """Deep supervision, discarded after training: from the hidden state after layer ``layer`` at the end of each
    option's line, score the option; the four scores of a question are trained to pick the right one. A letter
    answer is otherwise the last of a long chain (find the answer, then the option that holds it, then its letter)
    at the last position alone; this asks each option's own tokens to check it against the video, so the last
    layers need only find the option that passed."""

    def __init__(self, model: Any, layer: int = 3) -> None:
        super().__init__()
        self.layer = layer
        self.head = torch.nn.Linear(model.config.text_config.hidden_size, 1)

    def loss(self, hidden_states: tuple[torch.Tensor, ...], option_ends: torch.Tensor,
             option_answers: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the right option among each question's four (questions without options are skipped)."""
        asked = option_answers != -100
        if not bool(asked.any()):
            return hidden_states[self.layer].new_zeros(())
        rows = torch.arange(option_ends.shape[0])[:, None, None].expand_as(option_ends)
        scores = self.head(hidden_states[self.layer][rows, option_ends.clamp(min=0)].float()).squeeze(-1)
        return torch.nn.functional.cross_entropy(scores[asked], option_answers[asked])


def letter_batch(tokenizer: Any, rng: np.random.Generator, batch_size: int,
                 name_then_letter: bool = False, kind_first: bool = False) -> dict[str, torch.Tensor]:
    """Text-only four-option questions in the Video-MME prompt whose question states its answer ("Which shape moves
    during the video? It is star."), answered with the letter. They teach the step every multiple-choice answer
    ends with — find the option that holds what the model knows and say its letter — which video answers alone
    teach too slowly: the letter loss sits at chance for hundreds of steps while the open-ended answers are
    learned. With ``name_then_letter`` the answer names the option first (``"star: B"``), as the video answers do
    then, and with ``kind_first`` as well it starts with the question's word (``"moves star: B"``)."""
    sequences, turn_lists = [], []
    while len(sequences) < batch_size:
        question = video_question(sample_video(rng, num_frames=VIDEO_FRAMES), str(rng.choice(VIDEO_QUESTION_KINDS)),
                                  rng)
        if question is not None:
            prompt = videomme_prompt(f"{question.question} It is {option_text(question)}.", question.options)
            turn_lists.append([(prompt, four_option_answer(question, name_then_letter, kind_first))])
            sequences.append(encode_conversation(tokenizer, turn_lists[-1], 0))
    return {**pad_right(sequences, tokenizer.pad_token_id), **option_targets(tokenizer, sequences, turn_lists)}


def quick_videomme_accuracy(model: Any, processor: Any, seed: int, num_videos: int = 30) -> dict[str, float]:
    """Accuracy on four-option questions (Video-MME prompt) about held-out videos, one question per video, the
    kinds taken in turn: ``{"all": ..., kind: ...}``."""
    rng = np.random.default_rng(seed)
    size = processor.video_processor.crop_size["height"]
    correct: dict[str, list[bool]] = {kind: [] for kind in VIDEO_QUESTION_KINDS}
    for number in range(num_videos):
        video, questions = sample_questions(rng, 1, first=VIDEO_QUESTION_KINDS[number % len(VIDEO_QUESTION_KINDS)])
        question = questions[0]
        frames = render_video(video, size=size, seed=int(rng.integers(2**31)))
        answer = answer_video_question(model, processor, frames, question.question, question.options,
                                       max_new_tokens=6)
        correct[question.kind].append(answer == question.answer)
    scores = {kind: round(float(np.mean(hits)), 3) for kind, hits in correct.items() if hits}
    return {"all": round(float(np.mean([hit for hits in correct.values() for hit in hits])), 3), **scores}


def initialise(model: Any, folder: Path) -> None:
    """Load a checkpoint into the video model: ``shapes-image``'s weights (tower, projector, language model, head)
    to start, or a ``shapes-video`` checkpoint's, all of them, to go on training it."""
    from transformers import LlavaForConditionalGeneration, LlavaNextVideoForConditionalGeneration

    architectures = json.loads((folder / "config.json").read_text()).get("architectures") or []
    if "LlavaNextVideoForConditionalGeneration" in architectures:
        trained = LlavaNextVideoForConditionalGeneration.from_pretrained(folder, local_files_only=True)
        model.load_state_dict(trained.state_dict())
        return
    image_model = LlavaForConditionalGeneration.from_pretrained(folder, local_files_only=True)
    missing, unexpected = model.load_state_dict(image_model.state_dict(), strict=False)
    if unexpected or any(not key.endswith("image_newline") for key in missing):
        raise ValueError(f"{folder} is neither a shapes-image nor a shapes-video checkpoint: missing {missing}, "
                         f"unexpected {unexpected}")


def train(out: Path, init: Path, steps: int, batch_size: int, num_turns: int, lr: float, seed: int,
          eval_every: int, save_every: int = 0, train_vision: bool = False, letter_warmup: int = 300,
          letter_batch_size: int = 16, balanced_kinds: bool = False, short_video_steps: int = 0,
          option_probe: bool = False, causal_targets: bool = False, multiple_choice: float = 0.5,
          name_then_letter: bool = False, named_letters: bool = False, summary_probe: bool = False,
          kind_first: bool = False) -> dict:
    """Train and save to ``out``; returns the run's summary (also written to ``out/training.json``).

    First ``letter_warmup`` steps on :func:`letter_batch` alone (64 questions a step, a few minutes), then
    ``steps`` steps on videos, each also with ``letter_batch_size`` text-only letter questions; the first
    ``short_video_steps`` of them show videos of 3 or 4 frames (drawn per batch), a curriculum. ``name_then_letter``:
    four-option video answers name the option before its letter; ``named_letters``: the letter questions too;
    ``kind_first``: named answers start with the question's word for what it asks; ``summary_probe``: train with
    :class:`SummaryProbe`."""
    torch.manual_seed(seed)
    model, processor = build_shapes_video(seed)
    initialise(model, init)
    model.model.vision_tower.requires_grad_(train_vision)
    tokenizer = processor.tokenizer
    rng = np.random.default_rng(seed)
    probe = TokenProbe(model, num_flags=len(CAUSAL_TRACK_FLAGS if causal_targets else TRACK_FLAGS))
    parameters = [p for p in model.parameters() if p.requires_grad]

    options = OptionProbe(model) if option_probe else None
    summary = SummaryProbe(model) if summary_probe else None
    helper_parameters = [p for helper in (options, summary) if helper is not None for p in helper.parameters()]

    def option_loss(batch: dict[str, torch.Tensor], output: Any) -> dict[str, torch.Tensor]:
        if options is None:
            return {}
        return {"option_loss": options.loss(output.hidden_states, batch["option_ends"], batch["option_answers"])}

    def letter_losses(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        targets = {key: batch.pop(key) for key in ("option_ends", "option_answers")}
        output = model(**batch, output_hidden_states=options is not None)
        return {"letter_loss": output.loss, **{f"letter_{k}": v for k, v in option_loss(targets, output).items()}}

    warmup_history, warmup_minutes = [], 0.0
    if letter_warmup:
        warmup_history, warmup_minutes = train_loop(
            model, parameters + helper_parameters, lambda: letter_batch(tokenizer, rng, 64, named_letters, kind_first),
            letter_losses, steps=letter_warmup, lr=lr, out=out)

    def losses(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        shapes, flags = batch.pop("token_shapes"), batch.pop("token_flags")
        targets = {key: batch.pop(key) for key in ("option_ends", "option_answers")}
        summary_parts = [batch.pop(key) for key in ("summary_positions", "summary_flags", "summary_count")]
        output = model(**batch, output_hidden_states=True)
        parts = {"loss": output.loss, "token_loss": probe.loss(output.hidden_states,
                                                               batch["input_ids"] == tokenizer.video_token_id,
                                                               shapes, flags),
                 **option_loss(targets, output)}
        if summary is not None:
            parts["summary_loss"] = summary.loss(output.hidden_states, *summary_parts)
        if letter_batch_size:
            parts.update(letter_losses(letter_batch(tokenizer, rng, letter_batch_size, named_letters, kind_first)))
        return parts

    video_steps = 0

    def next_frames() -> int:
        nonlocal video_steps
        video_steps += 1
        return int(rng.integers(3, 5)) if video_steps <= short_video_steps else VIDEO_FRAMES

    history, minutes = train_loop(
        model, parameters + list(probe.parameters()) + helper_parameters,
        lambda: make_batch(processor, rng, batch_size, num_turns, balanced_kinds, next_frames(), causal_targets,
                           multiple_choice, name_then_letter, kind_first),
        losses, steps=steps, lr=lr, out=out,
        evaluate=lambda step: {f"quick_{kind}": score for kind, score in
                              quick_videomme_accuracy(model, processor, seed=20_000 + step).items()},
        eval_every=eval_every, save_every=save_every)
    model.requires_grad_(True)
    final = quick_videomme_accuracy(model, processor, seed=888_888, num_videos=100)
    summary = {"init": str(init), "steps": steps, "batch_size": batch_size, "turns": num_turns, "lr": lr,
               "seed": seed, "train_vision": train_vision, "letter_warmup": letter_warmup,
               "letter_batch_size": letter_batch_size, "balanced_kinds": balanced_kinds,
               "short_video_steps": short_video_steps, "option_probe": option_probe,
               "causal_targets": causal_targets, "multiple_choice": multiple_choice,
               "name_then_letter": name_then_letter, "named_letters": named_letters, "summary_probe": summary_probe,
               "kind_first": kind_first,
               "wall_minutes": round(warmup_minutes + minutes, 1),
               "quick_videomme_acc_heldout": final, "parameters": sum(p.numel() for p in model.parameters()),
               "letter_warmup_history": warmup_history, "history": history}
    save_model(model, processor, out, summary)
    return summary


#: The rounds of :data:`BUNDLED_ROUNDS` (and rounds 9 on of :data:`PREVIOUS_ROUNDS`): named four-option answers (the
#: letter questions too) that start with the question's word for what it asks, the summary probe, the vision tower
#: trained, and each round's own videos.
KIND_FIRST_ROUND = {"steps": 400, "lr": 3e-4, "option_probe": True, "multiple_choice": 1.0, "name_then_letter": True,
                    "named_letters": True, "kind_first": True, "summary_probe": True, "train_vision": True}
#: The bundled weights' recipe (``--recipe bundled``), rounds each continuing the one before, the first from the
#: bundled ``shapes-image`` (the default ``--init``, whose weights are in the repository, so one command retrains
#: it): :data:`KIND_FIRST_ROUND` throughout, the first round longer and at a higher learning rate, after a 300-step
#: letter warm-up; seeds 9 to 13, those of the previous recipe's kind-first rounds and the next one.
BUNDLED_ROUNDS = (
    {**KIND_FIRST_ROUND, "steps": 800, "lr": 5e-4, "letter_warmup": 300, "seed": 9},
    *({**KIND_FIRST_ROUND, "letter_warmup": 0, "seed": seed} for seed in range(10, 14)),
)
#: The previous bundled weights' recipe (``--recipe previous``), rounds each continuing the one before,
#: the first from ``shapes-image``'s round 2 (:data:`IMAGE_ROUNDS`): causal token targets on answerable videos, then
#: the option probe with a short letter warm-up at a lower learning rate, then ever more of the video questions asked
#: with four options, then four-option answers that name the option before its letter (the letter questions too,
#: from round 7), then :data:`KIND_FIRST_ROUND` (seeded by the round's number).
PREVIOUS_ROUNDS = (
    {"steps": 1500, "lr": 5e-4, "letter_warmup": 300},
    {"steps": 500, "lr": 3e-4, "letter_warmup": 50, "option_probe": True},
    {"steps": 400, "lr": 3e-4, "letter_warmup": 0, "option_probe": True, "multiple_choice": 0.8},
    {"steps": 400, "lr": 3e-4, "letter_warmup": 0, "option_probe": True, "multiple_choice": 1.0},
    {"steps": 400, "lr": 3e-4, "letter_warmup": 0, "option_probe": True, "multiple_choice": 1.0},
    {"steps": 400, "lr": 3e-4, "letter_warmup": 0, "option_probe": True, "multiple_choice": 1.0,
     "name_then_letter": True},
    {"steps": 400, "lr": 3e-4, "letter_warmup": 50, "option_probe": True, "multiple_choice": 1.0,
     "name_then_letter": True, "named_letters": True},
    {"steps": 400, "lr": 3e-4, "letter_warmup": 0, "option_probe": True, "multiple_choice": 1.0,
     "name_then_letter": True, "named_letters": True},
    {**KIND_FIRST_ROUND, "letter_warmup": 50, "seed": 9},
    {**KIND_FIRST_ROUND, "letter_warmup": 0, "seed": 10},
    {**KIND_FIRST_ROUND, "letter_warmup": 0, "seed": 11},
    {**KIND_FIRST_ROUND, "letter_warmup": 0, "seed": 12},
)
#: The recipes ``--recipe`` runs, by name.
RECIPES = {"bundled": BUNDLED_ROUNDS, "previous": PREVIOUS_ROUNDS}
#: The rounds of ``shapes-image``'s recipe (``python -m mmaccel.zoo.train_image --recipe bundled --rounds 2``) whose
#: model :data:`PREVIOUS_ROUNDS` starts from (the bundled ``shapes-image`` has a third round, added later).
IMAGE_ROUNDS = 2
#: What the rounds of a recipe share unless they say otherwise.
RECIPE_COMMON = {"balanced_kinds": True, "causal_targets": True, "seed": 0, "train_vision": False}


def main(argv: list[str] | None = None) -> int:
    """Command line of the trainer."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="where to save the model (save_pretrained layout)")
    parser.add_argument("--init", default=None,
                        help="a trained shapes-image folder, or a shapes-video one to go on training it (default: "
                             "the bundled shapes-image; --recipe previous needs it given, see IMAGE_ROUNDS)")
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--turns", type=int, default=3, help="questions per conversation")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=300, help="steps between quick held-out checks (0: none)")
    parser.add_argument("--save-every", type=int, default=100, help="steps between checkpoints in OUT/checkpoint")
    parser.add_argument("--train-vision", action="store_true", help="also train the vision tower")
    parser.add_argument("--letter-warmup", type=int, default=300,
                        help="text-only steps on letter questions before the videos (0: none)")
    parser.add_argument("--letter-batch-size", type=int, default=16,
                        help="text-only letter questions added to every video step (0: none)")
    parser.add_argument("--balanced-kinds", action="store_true",
                        help="draw each conversation's video to answer its first question's kind, as the held-out "
                             "set is built (the previous bundled model was trained without)")
    parser.add_argument("--short-video-steps", type=int, default=0,
                        help="the first video steps that show 3- or 4-frame videos (a curriculum; 0: none)")
    parser.add_argument("--option-probe", action="store_true",
                        help="deep supervision of each option of a four-option question (OptionProbe)")
    parser.add_argument("--causal-token-targets", action="store_true",
                        help="deep-supervise each visual token with what its object has done up to its frame "
                             "(CAUSAL_TRACK_FLAGS) instead of over the whole video")
    parser.add_argument("--multiple-choice", type=float, default=0.5,
                        help="share of video questions asked with four options and answered with a letter")
    parser.add_argument("--name-then-letter", action="store_true",
                        help="four-option video answers name the option, then give its letter (\"star: B\"), "
                             "which Video-MME's letter extraction reads as B")
    parser.add_argument("--named-letters", action="store_true",
                        help="the text-only letter questions are answered the same way (\"star: B\")")
    parser.add_argument("--summary-probe", action="store_true",
                        help="deep supervision of the whole video's timeline after it and at every answer "
                             "(SummaryProbe)")
    parser.add_argument("--kind-first", action="store_true",
                        help="named answers (--name-then-letter, --named-letters) start with the question's word "
                             "for what it asks (\"last star: B\")")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default=None,
                        help="run a whole recipe of rounds from --init: the bundled weights' (BUNDLED_ROUNDS, from "
                             "the bundled shapes-image) or the previous bundled weights' (PREVIOUS_ROUNDS, from "
                             "shapes-image's round 2); the options its rounds set are then refused")
    parser.add_argument("--keep-rounds", action="store_true",
                        help="with --recipe: keep each round's model in OUT/round-N")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    init = Path(args.init) if args.init else WEIGHTS_DIR / "shapes-image"
    if args.recipe:
        rounds = RECIPES[args.recipe]
        set_by_recipe = {key for stage in rounds for key in stage} | set(RECIPE_COMMON)
        option_names = {"causal_targets": "causal_token_targets", "num_turns": "turns"}
        dests = {option_names.get(key, key) for key in set_by_recipe}
        changed = sorted(f"--{dest.replace('_', '-')}" for dest in dests
                         if getattr(args, dest) != parser.get_default(dest))
        if changed:
            parser.error(f"--recipe {args.recipe} sets {', '.join(changed)} itself; leave them out")
        if args.init is None and args.recipe == "previous":
            parser.error(f"--recipe {args.recipe} starts from shapes-image's round {IMAGE_ROUNDS}, not from the "
                         f"bundled shapes-image (round {IMAGE_ROUNDS + 1}): make it with `python -m "
                         f"mmaccel.zoo.train_image --recipe bundled --rounds {IMAGE_ROUNDS} --out DIR` and pass "
                         "--init DIR")
        summary = train_in_rounds(train, Path(args.out), rounds, init, args.keep_rounds,
                                  **RECIPE_COMMON, batch_size=args.batch_size, num_turns=args.turns,
                                  eval_every=args.eval_every, save_every=args.save_every,
                                  letter_batch_size=args.letter_batch_size,
                                  short_video_steps=args.short_video_steps)
        print(json.dumps({k: v for k, v in summary.items() if "history" not in k}))
        return 0
    summary = train(Path(args.out), init, args.steps, args.batch_size, args.turns, args.lr, args.seed,
                    args.eval_every, args.save_every, args.train_vision, args.letter_warmup, args.letter_batch_size,
                    args.balanced_kinds, args.short_video_steps, args.option_probe, args.causal_token_targets,
                    args.multiple_choice, args.name_then_letter, args.named_letters, args.summary_probe,
                    args.kind_first)
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
