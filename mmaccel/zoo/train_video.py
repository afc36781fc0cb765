"""Train ``shapes-video`` on shapes-world videos, on CPU: ``python -m mmaccel.zoo.train_video --out DIR``.

The model starts from ``shapes-image`` (its vision tower, projector and language model load into
LLaVA-NeXT-Video's, which adds 2x2 pooling of each frame); the vision tower stays frozen unless ``--train-vision``.
Every step draws fresh 8-frame videos from a seeded stream (the held-out sets use other seeds) and trains on
conversations of temporal questions, half in lmms-eval's Video-MME prompt (four options, answer a letter), half
open-ended (answer a word), so the model learns the timeline and the option format separately. The loss is on
answers only, plus a deep-supervision loss (:class:`TimelineProbe`, dropped from the saved model) that asks the
answer positions for the whole timeline. The run is deterministic for a given seed and step count.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .reference import VIDEO_FRAMES, WEIGHTS_DIR, build_shapes_video
from .score import answer_video_question
from .training import answer_positions, encode_conversation, pad_right, save_model, train_loop
from .world import COLOURS, SHAPES, VideoScene, render_video, sample_video
from .world.video_tasks import VIDEO_QUESTION_KINDS, VideoQuestion, video_qa_turns, video_questions


def sample_questions(rng: np.random.Generator, num_turns: int) -> tuple[VideoScene, list[VideoQuestion]]:
    """A fresh video and up to ``num_turns`` questions of different kinds about it (at least one), the first kind
    drawn uniformly (see :func:`~mmaccel.zoo.world.video_tasks.video_questions`)."""
    video = sample_video(rng, num_frames=VIDEO_FRAMES)
    first = str(rng.choice(VIDEO_QUESTION_KINDS))
    return video, video_questions(video, rng, count=num_turns, first=first)


def make_batch(processor: Any, rng: np.random.Generator, batch_size: int, num_turns: int) -> dict[str, torch.Tensor]:
    """A right-padded batch of fresh videos with their conversations, and the deep-supervision targets:
    ``timelines`` per video and ``answers`` rows of (row, position predicting an answer)."""
    tokenizer = processor.tokenizer
    size = processor.video_processor.crop_size["height"]
    tokens_per_frame = (size // processor.patch_size) ** 2 // 4
    videos, sequences, timelines, answers = [], [], [], []
    for row in range(batch_size):
        video, questions = sample_questions(rng, num_turns)
        videos.append(render_video(video, size=size, seed=int(rng.integers(2**31))))
        turns = video_qa_turns(questions, rng)
        sequences.append(encode_conversation(tokenizer, turns, tokens_per_frame * len(videos[-1]),
                                             media_token_id=tokenizer.video_token_id))
        timelines.append(timeline_targets(video))
        answers += [(row, position) for position in answer_positions(sequences[-1][1])]
    pixels = processor.video_processor(videos, return_tensors="pt")["pixel_values_videos"]
    return {**pad_right(sequences, tokenizer.pad_token_id), "pixel_values_videos": pixels,
            "timelines": torch.from_numpy(np.stack(timelines)), "answers": torch.tensor(answers)}


def timeline_targets(video: VideoScene) -> np.ndarray:
    """The timeline as one binary vector: for each frame, which shapes and which colours are visible, then which
    shapes move."""
    shapes = np.zeros((video.num_frames, len(SHAPES)), np.float32)
    colours = np.zeros((video.num_frames, len(COLOURS)), np.float32)
    for frame in range(video.num_frames):
        for obj in video.frame(frame).objects:
            shapes[frame, SHAPES.index(obj.shape)] = 1
            colours[frame, list(COLOURS).index(obj.colour)] = 1
    moving = np.array([any(t.moves for t in video.tracks if t.shape == s) for s in SHAPES], np.float32)
    return np.concatenate([shapes.ravel(), colours.ravel(), moving])


class TimelineProbe(torch.nn.Module):
    """Deep supervision, discarded after training: from the language model's hidden state after layer ``layer`` at
    each answer-predicting position, predict the whole timeline (:func:`timeline_targets`), so that what every
    temporal question combines reaches the answer position early in training (see ``train_image.AnswerProbe``)."""

    def __init__(self, model: Any, size: int, layer: int = 2) -> None:
        super().__init__()
        self.layer = layer
        self.head = torch.nn.Linear(model.config.text_config.hidden_size, size)

    def loss(self, hidden_states: tuple[torch.Tensor, ...], answers: torch.Tensor,
             timelines: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy of the timeline at every answer position."""
        rows, positions = answers.unbind(-1)
        logits = self.head(hidden_states[self.layer][rows, positions].float())
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, timelines[rows])


def quick_videomme_accuracy(model: Any, processor: Any, seed: int, num_videos: int = 30) -> float:
    """Accuracy on four-option questions (Video-MME prompt) about held-out videos, one question per video."""
    rng = np.random.default_rng(seed)
    size = processor.video_processor.crop_size["height"]
    correct = 0
    for _ in range(num_videos):
        video, questions = sample_questions(rng, 1)
        question = questions[0]
        frames = render_video(video, size=size, seed=int(rng.integers(2**31)))
        answer = answer_video_question(model, processor, frames, question.question, question.options,
                                       max_new_tokens=4)
        correct += answer == question.answer
    return correct / num_videos


def initialise_from_image_model(model: Any, folder: Path) -> None:
    """Load ``shapes-image``'s weights (tower, projector, language model, head) into the video model."""
    from transformers import LlavaForConditionalGeneration

    image_model = LlavaForConditionalGeneration.from_pretrained(folder, local_files_only=True)
    missing, unexpected = model.load_state_dict(image_model.state_dict(), strict=False)
    if unexpected or any(not key.endswith("image_newline") for key in missing):
        raise ValueError(f"{folder} is not a shapes-image checkpoint: missing {missing}, unexpected {unexpected}")


def train(out: Path, init: Path, steps: int, batch_size: int, num_turns: int, lr: float, seed: int,
          eval_every: int, save_every: int = 0, train_vision: bool = False) -> dict:
    """Train and save to ``out``; returns the run's summary (also written to ``out/training.json``)."""
    torch.manual_seed(seed)
    model, processor = build_shapes_video(seed)
    initialise_from_image_model(model, init)
    model.model.vision_tower.requires_grad_(train_vision)
    rng = np.random.default_rng(seed)

    probe = TimelineProbe(model, len(timeline_targets(sample_video(np.random.default_rng(0), VIDEO_FRAMES))))

    def losses(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        answers, timelines = batch.pop("answers"), batch.pop("timelines")
        output = model(**batch, output_hidden_states=True)
        return {"loss": output.loss, "timeline_loss": probe.loss(output.hidden_states, answers, timelines)}

    history, minutes = train_loop(
        model, [p for p in model.parameters() if p.requires_grad] + list(probe.parameters()),
        lambda: make_batch(processor, rng, batch_size, num_turns), losses, steps=steps, lr=lr, out=out,
        evaluate=lambda step: {"quick_videomme_acc": quick_videomme_accuracy(model, processor, seed=20_000 + step)},
        eval_every=eval_every, save_every=save_every)
    model.requires_grad_(True)
    final = quick_videomme_accuracy(model, processor, seed=888_888, num_videos=100)
    summary = {"init": str(init), "steps": steps, "batch_size": batch_size, "turns": num_turns, "lr": lr,
               "seed": seed, "train_vision": train_vision, "wall_minutes": round(minutes, 1),
               "quick_videomme_acc_heldout": final, "parameters": sum(p.numel() for p in model.parameters()),
               "history": history}
    save_model(model, processor, out, summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    """Command line of the trainer."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="where to save the model (save_pretrained layout)")
    parser.add_argument("--init", default=str(WEIGHTS_DIR / "shapes-image"), help="a trained shapes-image folder")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--turns", type=int, default=3, help="questions per conversation")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=250, help="steps between quick held-out checks (0: none)")
    parser.add_argument("--save-every", type=int, default=100, help="steps between checkpoints in OUT/checkpoint")
    parser.add_argument("--train-vision", action="store_true", help="also train the vision tower")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    summary = train(Path(args.out), Path(args.init), args.steps, args.batch_size, args.turns, args.lr, args.seed,
                    args.eval_every, args.save_every, args.train_vision)
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
