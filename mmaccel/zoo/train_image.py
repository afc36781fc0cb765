"""Train ``shapes-image`` from scratch on the shapes world, on CPU: ``python -m mmaccel.zoo.train_image --out DIR``.

Every step draws fresh scenes from a seeded stream (the held-out sets use other seeds), renders them, and trains on
multi-turn conversations in LLaVA-1.5's format, one image per conversation::

    USER: <image>×256 "\\n" q1 "\\nAnswer the question using a single word or phrase." " ASSISTANT:" " a1" </s>
    " USER: " q2 ... " ASSISTANT:" " a2" </s> ...

The loss is on answer tokens only. Questions mix existence (balanced yes/no, negatives drawn uniformly among absent
shapes, so the theme priors survive, as in real instruction data), colour, count and position yes/no questions and
captions.

Training has two stages. First the vision tower alone learns to see (``--vision-steps``): per patch, the shape and
colour of the object under it (exact labels from :func:`~mmaccel.zoo.world.patch_labels`), and per image, which
shapes it holds (the largest patch score of each shape). A tower trained only through the language model learns this
slowly: a linear probe on the first bundled model's tower found the right shape for 46 % of object patches. Then the
whole model trains on conversations.

Language-model loss alone teaches the language prior fast and vision slowly: a from-scratch model gets one bit of
signal per yes/no answer and sits on a long plateau where the answer ignores both the image and the question. So
training adds auxiliary losses, all through heads that are discarded afterwards:

- :class:`PatchProbe`: per patch, the tower's features and the projected visual tokens predict the shape and colour
  of the object under the patch (exact labels from :func:`~mmaccel.zoo.world.patch_labels`); the projected tokens
  are scored against the language model's own embeddings of the shape and colour words, which aligns them;
- :class:`AnswerProbe`: at each answer position, an intermediate layer predicts which shape the question asks
  about and which shapes the image holds, the two facts an existence answer combines.

The saved model is a plain ``LlavaForConditionalGeneration``. The run is deterministic for a given seed and step
count. ``--recipe bundled`` runs the bundled weights' whole recipe in one command: a run from scratch, then two
continuations of it (:data:`BUNDLED_ROUNDS`; ``--rounds 2`` stops after the first continuation).
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import LlavaForConditionalGeneration

from .reference import build_shapes_image
from .score import answer_image_questions
from .training import answer_positions, encode_conversation, pad_right, save_model, train_in_rounds, train_loop
from .world import COLOURS, SHAPES, Scene, patch_labels, render_scene, sample_scene
from .world.tasks import image_qa_turns


def patch_targets(scene: Scene, size: int, patch: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-patch shape and colour classes (0: background, else 1 + index in SHAPES / COLOURS), row-major."""
    objects = patch_labels(scene, size, patch).reshape(-1)
    shape_of = np.array([0] + [1 + SHAPES.index(o.shape) for o in scene.objects])
    colour_of = np.array([0] + [1 + list(COLOURS).index(o.colour) for o in scene.objects])
    return shape_of[objects], colour_of[objects]


def scene_batch(processor: Any, scenes: list[Scene], rng: np.random.Generator, patch: int) -> dict[str, torch.Tensor]:
    """``scenes`` rendered (pixel noise seeded from ``rng``) as ``pixel_values``, with per-patch ``shape_targets``
    and ``colour_targets`` and per-image ``presence`` of each shape."""
    size = processor.image_processor.crop_size["height"]
    images = [render_scene(scene, size=size, seed=int(rng.integers(2**31))) for scene in scenes]
    shapes, colours = zip(*(patch_targets(scene, size, patch) for scene in scenes), strict=True)
    return {"pixel_values": processor.image_processor(images, return_tensors="pt")["pixel_values"],
            "shape_targets": torch.from_numpy(np.stack(shapes)).long(),
            "colour_targets": torch.from_numpy(np.stack(colours)).long(),
            "presence": torch.tensor([[float(s in scene.shapes_present()) for s in SHAPES] for scene in scenes])}


def vision_batch(processor: Any, rng: np.random.Generator, batch_size: int, patch: int) -> dict[str, torch.Tensor]:
    """:func:`scene_batch` of ``batch_size`` fresh scenes, for the vision stage."""
    return scene_batch(processor, [sample_scene(rng) for _ in range(batch_size)], rng, patch)


def patch_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``(batch, patches, classes)`` logits against ``(batch, patches)`` classes."""
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())


class VisionProbe(torch.nn.Module):
    """The vision stage's head on the tower's patch features (those the projector receives): per-patch shape and
    colour classes, and per-image presence of each shape as its best patch's shape score over the background's."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.tower = model.model.vision_tower
        self.head = torch.nn.Linear(model.config.vision_config.hidden_size, 2 * (1 + len(SHAPES)))

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Last-layer patch features without the CLS token (LLaVA's ``"default"`` selection)."""
        return self.tower(pixel_values, output_hidden_states=True).hidden_states[-1][:, 1:]

    def losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Patch cross-entropies (shape + colour) and presence binary cross-entropy."""
        shape_logits, colour_logits = self.head(self.features(batch["pixel_values"])).float().chunk(2, dim=-1)
        presence_logits = shape_logits[..., 1:].amax(dim=1) - shape_logits[..., :1].amax(dim=1)
        return {
            "patch_loss": patch_cross_entropy(shape_logits, batch["shape_targets"])
            + patch_cross_entropy(colour_logits, batch["colour_targets"]),
            "presence_loss": torch.nn.functional.binary_cross_entropy_with_logits(presence_logits, batch["presence"]),
        }

    @torch.no_grad()
    def accuracy(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """Shape accuracy on object patches and presence accuracy (logit > 0) of a held-out batch."""
        shape_logits = self.head(self.features(batch["pixel_values"])).float().chunk(2, dim=-1)[0]
        targets = batch["shape_targets"]
        objects = targets > 0
        presence = (shape_logits[..., 1:].amax(dim=1) - shape_logits[..., :1].amax(dim=1)) > 0
        object_patch_acc = (shape_logits.argmax(-1)[objects] == targets[objects]).float().mean().item()
        return {"object_patch_acc": round(object_patch_acc, 4),
                "presence_acc": round((presence == batch["presence"].bool()).float().mean().item(), 4)}


def pretrain_vision(model: Any, processor: Any, out: Path, steps: int, batch_size: int, lr: float,
                    seed: int) -> tuple[list[dict], float, torch.nn.Linear]:
    """The vision stage: trains the tower and a patch head for ``steps`` steps on its own seeded scene stream;
    returns the log (with held-out accuracies every 500 steps), the wall time in minutes and the head."""
    probe = VisionProbe(model)
    patch = model.config.vision_config.patch_size
    rng = np.random.default_rng(seed + 1)
    held_out = vision_batch(processor, np.random.default_rng(seed + 500_000), 200, patch)
    history, minutes = train_loop(
        probe, list(probe.parameters()), lambda: vision_batch(processor, rng, batch_size, patch), probe.losses,
        steps=steps, lr=lr, out=out, evaluate=lambda step: probe.accuracy(held_out), eval_every=500, log_every=100)
    return history, minutes, probe.head


def make_batch(processor: Any, rng: np.random.Generator, batch_size: int, num_turns: int,
               image_tokens: int) -> dict[str, torch.Tensor]:
    """A right-padded training batch of fresh scenes, with the auxiliary targets: per-patch ``shape_targets`` and
    ``colour_targets``, per-image ``presence`` of each shape, and ``answers`` rows of (row, position predicting the
    answer, asked shape or -100)."""
    tokenizer = processor.tokenizer
    patch = processor.image_processor.crop_size["height"] // math.isqrt(image_tokens)
    scenes = [sample_scene(rng) for _ in range(batch_size)]
    sequences, answers = [], []
    for row, scene in enumerate(scenes):
        turns = image_qa_turns(scene, rng, num_turns)
        sequences.append(encode_conversation(tokenizer, turns, image_tokens))
        for position, (question, _) in zip(answer_positions(sequences[-1][1]), turns, strict=True):
            asked = _EXISTENCE.match(question)
            answers.append((row, position, SHAPES.index(asked.group(1)) if asked else -100))
    return {**pad_right(sequences, tokenizer.pad_token_id), **scene_batch(processor, scenes, rng, patch),
            "answers": torch.tensor(answers)}


_EXISTENCE = re.compile(r"^Is there a (\w+) in the image\?")


class AnswerProbe(torch.nn.Module):
    """Deep supervision of the two facts an existence answer combines, at the position that predicts each answer,
    read from the language model's hidden state after layer ``layer`` (the later layers are left to combine them):
    which shape the question asks about (existence questions only), and which shapes the image holds (every
    answer). Without it the model sits on a long plateau where neither fact reaches the answer position."""

    def __init__(self, model: Any, layer: int = 2) -> None:
        super().__init__()
        hidden = model.config.text_config.hidden_size
        self.layer = layer
        self.asked = torch.nn.Linear(hidden, len(SHAPES))
        self.present = torch.nn.Linear(hidden, len(SHAPES))

    def losses(self, hidden_states: tuple[torch.Tensor, ...], answers: torch.Tensor,
               presence: torch.Tensor) -> dict[str, torch.Tensor]:
        """Cross-entropy of the asked shape and binary cross-entropy of each shape's presence."""
        rows, positions, asked = answers.unbind(-1)
        states = hidden_states[self.layer][rows, positions].float()
        return {
            "asked_loss": torch.nn.functional.cross_entropy(self.asked(states), asked, ignore_index=-100),
            "present_loss": torch.nn.functional.binary_cross_entropy_with_logits(self.present(states),
                                                                                  presence[rows]),
        }


class PatchProbe(torch.nn.Module):
    """The auxiliary losses, through forward hooks on the projector (nothing of it is saved with the model).

    - ``patch_loss``: a linear head on the features the projector receives predicts each patch's shape and colour
      class, so the vision tower learns what is where.
    - ``align_loss``: each projected visual token, scored against the language model's own input embeddings of the
      shape words (" circle", ...) and colour words (" red", ...) plus a learned background vector, predicts the same
      classes. This is what LLaVA's alignment stage gives a projector: visual tokens that "speak" the words a question
      uses, so that a question's shape word can find its patches by attention.
    """

    def __init__(self, model: Any, tokenizer: Any) -> None:
        super().__init__()
        hidden = model.config.vision_config.hidden_size
        self.head = torch.nn.Linear(hidden, 2 * (1 + len(SHAPES)))
        self.embeddings = model.get_input_embeddings()
        self.shape_words = torch.tensor([_single_token(tokenizer, " " + s) for s in SHAPES])
        self.colour_words = torch.tensor([_single_token(tokenizer, " " + c) for c in COLOURS])
        text_hidden = model.config.text_config.hidden_size
        self.background = torch.nn.Parameter(torch.zeros(2, text_hidden))
        self.logit_scale = torch.nn.Parameter(torch.tensor(0.0))
        self.features: torch.Tensor | None = None
        self.projected: torch.Tensor | None = None
        self.hook = model.model.multi_modal_projector.register_forward_hook(self._capture)

    def _capture(self, module: Any, inputs: tuple, output: Any) -> None:
        self.features, self.projected = inputs[0], output

    def _word_logits(self, words: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
        classes = torch.cat([background[None], self.embeddings(words)])  # (1 + K, hidden)
        tokens = torch.nn.functional.normalize(self.projected.float(), dim=-1)
        return tokens @ torch.nn.functional.normalize(classes.float(), dim=-1).T * (10 * self.logit_scale.exp())

    def losses(self, shape_targets: torch.Tensor, colour_targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Both auxiliary losses for the last forward pass."""
        shape_logits, colour_logits = self.head(self.features).float().chunk(2, dim=-1)
        return {
            "patch_loss": patch_cross_entropy(shape_logits, shape_targets)
            + patch_cross_entropy(colour_logits, colour_targets),
            "align_loss": patch_cross_entropy(self._word_logits(self.shape_words, self.background[0]), shape_targets)
            + patch_cross_entropy(self._word_logits(self.colour_words, self.background[1]), colour_targets),
        }


def _single_token(tokenizer: Any, word: str) -> int:
    ids = tokenizer(word, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"{word!r} is not one token in this tokenizer: {ids}")
    return ids[0]


def quick_pope_accuracy(model: Any, processor: Any, seed: int, num_images: int = 40) -> float:
    """Accuracy on balanced existence questions about held-out scenes (a minimal scorer, exact-match parse)."""
    rng = np.random.default_rng(seed)
    images, questions, truths = [], [], []
    for _ in range(num_images):
        scene = sample_scene(rng)
        image = render_scene(scene, size=processor.image_processor.crop_size["height"], seed=int(rng.integers(2**31)))
        present = sorted(scene.shapes_present())
        absent = [s for s in SHAPES if s not in present]
        for shape, truth in ((rng.choice(present), "yes"), (rng.choice(absent), "no")):
            images.append(image)
            questions.append(f"Is there a {shape} in the image?")
            truths.append(truth)
    answers = answer_image_questions(model, processor, images, questions, batch_size=1, max_new_tokens=4)
    return sum(a == t for a, t in zip(answers, truths, strict=True)) / len(truths)


def train(out: Path, steps: int, batch_size: int, num_turns: int, lr: float, seed: int, eval_every: int,
          save_every: int = 0, aux_weight: float = 1.0, vision_steps: int = 0, vision_batch_size: int = 32,
          init: Path | None = None) -> dict:
    """Train (vision stage, then the whole model) and save to ``out``; returns the run's summary (also written to
    ``out/training.json``). With ``init`` (a shapes-image folder) training continues from its weights."""
    torch.manual_seed(seed)
    model, processor = build_shapes_image(seed)
    if init is not None:
        load_weights(model, init)
    vision_history, vision_minutes, vision_head = [], 0.0, None
    if vision_steps:
        vision_history, vision_minutes, vision_head = pretrain_vision(model, processor, out, vision_steps,
                                                                      vision_batch_size, lr, seed)
        model.train()
    image_tokens = model.config.image_seq_length
    rng = np.random.default_rng(seed)
    probe = PatchProbe(model, processor.tokenizer)
    if vision_head is not None:  # same classes in the same order: keep what the vision stage learned
        probe.head.load_state_dict(vision_head.state_dict())
    answer_probe = AnswerProbe(model)

    def losses(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        shape_targets, colour_targets = batch.pop("shape_targets"), batch.pop("colour_targets")
        answers, presence = batch.pop("answers"), batch.pop("presence")
        output = model(**batch, output_hidden_states=True)
        aux = {**probe.losses(shape_targets, colour_targets),
               **answer_probe.losses(output.hidden_states, answers, presence)}
        return {"loss": output.loss, **{k: aux_weight * v for k, v in aux.items()}}

    history, minutes = train_loop(
        model, list(model.parameters()) + list(probe.parameters()) + list(answer_probe.parameters()),
        lambda: make_batch(processor, rng, batch_size, num_turns, image_tokens), losses, steps=steps, lr=lr, out=out,
        evaluate=lambda step: {"quick_pope_acc": quick_pope_accuracy(model, processor, seed=10_000 + step)},
        eval_every=eval_every, save_every=save_every)
    probe.hook.remove()
    final = quick_pope_accuracy(model, processor, seed=999_999, num_images=100)
    summary = {"init": None if init is None else str(init), "steps": steps, "batch_size": batch_size,
               "turns": num_turns, "lr": lr, "seed": seed,
               "aux_weight": aux_weight, "vision_steps": vision_steps, "vision_batch_size": vision_batch_size,
               "vision_minutes": round(vision_minutes, 1), "wall_minutes": round(vision_minutes + minutes, 1),
               "quick_pope_acc_heldout": final, "parameters": sum(p.numel() for p in model.parameters()),
               "vision_history": vision_history, "history": history}
    save_model(model, processor, out, summary)
    return summary


#: The bundled weights' recipe: round 1 from scratch (the defaults), rounds 2 and 3 each continuing the one before
#: with more vision-stage steps (the tower was still learning) and a shorter whole-model stage, at half the learning
#: rate of the round before. ``shapes-video`` starts from round 2 (it was trained before round 3 existed).
BUNDLED_ROUNDS = ({"vision_steps": 2500, "steps": 1400, "lr": 1e-3, "seed": 0},
                  {"vision_steps": 1500, "steps": 600, "lr": 5e-4, "seed": 7},
                  {"vision_steps": 1500, "steps": 600, "lr": 2.5e-4, "seed": 14})


def train_rounds(out: Path, rounds: tuple[dict, ...], eval_every: int, save_every: int = 0, **common: Any) -> dict:
    """Train ``rounds`` in turn, the first from scratch (see :func:`~mmaccel.zoo.training.train_in_rounds`)."""
    return train_in_rounds(train, out, rounds, None, eval_every=eval_every, save_every=save_every,
                           **{"batch_size": 16, "num_turns": 8, **common})


def load_weights(model: Any, folder: Path) -> None:
    """Load a saved shapes-image's weights into ``model`` (same architecture), to continue training it."""
    trained = LlavaForConditionalGeneration.from_pretrained(folder, local_files_only=True)
    model.load_state_dict(trained.state_dict())


def main(argv: list[str] | None = None) -> int:
    """Command line of the trainer."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="where to save the model (save_pretrained layout)")
    parser.add_argument("--vision-steps", type=int, default=2500, help="steps of the vision stage (0: none)")
    parser.add_argument("--vision-batch-size", type=int, default=32, help="images per vision-stage step")
    parser.add_argument("--steps", type=int, default=1400, help="steps of the whole-model stage")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--turns", type=int, default=8, help="questions per conversation")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=250, help="steps between quick held-out checks (0: none)")
    parser.add_argument("--save-every", type=int, default=100, help="steps between checkpoints in OUT/checkpoint")
    parser.add_argument("--aux-weight", type=float, default=1.0, help="weight of the auxiliary losses")
    parser.add_argument("--init", default=None, help="continue from this shapes-image folder (default: from scratch)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--recipe", choices=["bundled"], default=None,
                        help="run the bundled weights' whole recipe (three rounds, see BUNDLED_ROUNDS); the step, "
                             "learning-rate, seed and --init options are then ignored")
    parser.add_argument("--rounds", type=int, default=len(BUNDLED_ROUNDS),
                        help="with --recipe: run its first N rounds only (2 gives the start of the previous "
                             "shapes-video's recipe, train_video --recipe previous)")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= len(BUNDLED_ROUNDS):
        parser.error(f"--rounds must be 1 to {len(BUNDLED_ROUNDS)}, got {args.rounds}")
    if args.rounds != len(BUNDLED_ROUNDS) and args.recipe != "bundled":
        parser.error("--rounds needs --recipe bundled")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.recipe == "bundled":
        summary = train_rounds(Path(args.out), BUNDLED_ROUNDS[:args.rounds], args.eval_every, args.save_every,
                               batch_size=args.batch_size, num_turns=args.turns, aux_weight=args.aux_weight,
                               vision_batch_size=args.vision_batch_size)
        print(json.dumps({k: v for k, v in summary.items() if "history" not in k}))
        return 0
    summary = train(Path(args.out), args.steps, args.batch_size, args.turns, args.lr, args.seed, args.eval_every,
                    args.save_every, args.aux_weight, args.vision_steps, args.vision_batch_size,
                    Path(args.init) if args.init else None)
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
