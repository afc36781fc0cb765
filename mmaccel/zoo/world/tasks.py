"""Questions about shapes-world scenes, in the layouts of the real benchmarks.

- Captions: one sentence per object, in drawing order.
- POPE (lmms-lab/POPE): "Is there a <shape> in the image?", balanced yes/no per image; the negatives of the three
  splits are sampled as POPE samples them: ``random`` (any absent shape), ``popular`` (the absent shapes most frequent
  in the whole set) and ``adversarial`` (the absent shapes that co-occur most with the ones present).
- MME (lmms-lab/MME): existence, count, position and color, two questions per image (one "Yes", one "No"), so that
  acc+ (both right) is defined.

Every function is deterministic in its ``numpy.random.Generator``.
"""

from __future__ import annotations

from collections import Counter
from itertools import combinations

import numpy as np

from ...eval.pope import POST_PROMPT
from .scenes import COLOURS, SHAPES, Scene

POPE_SPLITS = ("random", "popular", "adversarial")
MME_CATEGORIES = ("existence", "count", "position", "color")
MME_SUFFIX = " Please answer yes or no."
#: lmms-eval's post-prompt for POPE and MME (MME's own suffix is swapped for it).
SHORT_ANSWER_PROMPT = POST_PROMPT
CAPTION_PROMPT = "Describe the image."
#: Relative frequency of each kind of question in :func:`image_qa_turns`.
QUESTION_MIX = {"existence": 6, "color": 2, "count": 1, "position": 1, "caption": 1}
_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six")


def plural(shape: str, count: int) -> str:
    """``"circle"`` / ``"circles"``; ``"cross"`` / ``"crosses"``."""
    if count == 1:
        return shape
    return shape + ("es" if shape.endswith("s") else "s")


def caption(scene: Scene) -> str:
    """A sentence per object: "A red circle at the top left." (positions in thirds of the image)."""
    parts = []
    for obj in scene.objects:
        where = "centre" if (obj.vertical, obj.horizontal) == ("middle", "middle") else (
            f"{obj.vertical} {obj.horizontal}".replace("middle ", "").replace(" middle", ""))
        parts.append(f"A {obj.colour} {obj.shape} at the {where}.")
    return " ".join(parts)


def shape_statistics(scenes: list[Scene]) -> tuple[Counter, Counter]:
    """How many scenes hold each shape, and how many hold each unordered pair of shapes."""
    frequency: Counter = Counter()
    pairs: Counter = Counter()
    for scene in scenes:
        present = sorted(scene.shapes_present())
        frequency.update(present)
        pairs.update(combinations(present, 2))
    return frequency, pairs


def pope_negatives(scene: Scene, split: str, count: int, frequency: Counter, pairs: Counter,
                   rng: np.random.Generator) -> list[str]:
    """``count`` absent shapes chosen the way POPE's ``split`` chooses them (ties broken at random)."""
    absent = [s for s in SHAPES if s not in scene.shapes_present()]
    tie_break = {s: rng.random() for s in absent}
    if split == "random":
        ranked = sorted(absent, key=lambda s: tie_break[s])
    elif split == "popular":
        ranked = sorted(absent, key=lambda s: (-frequency[s], tie_break[s]))
    elif split == "adversarial":
        def co_occurrence(shape: str) -> int:
            return sum(pairs[tuple(sorted((shape, p)))] for p in scene.shapes_present())
        ranked = sorted(absent, key=lambda s: (-co_occurrence(s), tie_break[s]))
    else:
        raise ValueError(f"unknown POPE split {split!r}; allowed: {', '.join(POPE_SPLITS)}")
    return ranked[:count]


def pope_rows(scenes: list[Scene], rng: np.random.Generator, per_image: int = 3) -> dict[str, list[dict]]:
    """POPE rows per split (without images): up to ``per_image`` yes and as many no questions per image."""
    frequency, pairs = shape_statistics(scenes)
    rows: dict[str, list[dict]] = {split: [] for split in POPE_SPLITS}
    for index, scene in enumerate(scenes):
        present = sorted(scene.shapes_present())
        positives = [str(s) for s in rng.permutation(present)[:per_image]]
        for split in POPE_SPLITS:
            negatives = pope_negatives(scene, split, len(positives), frequency, pairs, rng)
            for shape, answer in [(s, "yes") for s in positives] + [(s, "no") for s in negatives]:
                rows[split].append({"image_index": index, "question": f"Is there a {shape} in the image?",
                                    "answer": answer, "object": shape})
    return rows


def _existence(scene: Scene, rng: np.random.Generator) -> list[tuple[str, str]] | None:
    present = sorted(scene.shapes_present())
    absent = [s for s in SHAPES if s not in present]
    return [(f"Is there a {rng.choice(present)} in this image?", "Yes"),
            (f"Is there a {rng.choice(absent)} in this image?", "No")]


def _count(scene: Scene, rng: np.random.Generator) -> list[tuple[str, str]] | None:
    shape = str(rng.choice(sorted(scene.shapes_present())))
    true = scene.count(shape)
    wrong = true + 1 if true == 1 or rng.random() < 0.5 else true - 1
    def question(n: int) -> str:
        return f"Are there {_NUMBERS[n]} {plural(shape, n)} in this image?" if n != 1 else \
            f"Is there exactly one {shape} in this image?"
    return [(question(true), "Yes"), (question(wrong), "No")]


def _position(scene: Scene, rng: np.random.Generator) -> list[tuple[str, str]] | None:
    # Only an object whose kind is unique in the scene and that sits clearly in one half has a certain answer.
    candidates = [o for o in scene.objects if scene.count(o.shape) == 1 and abs(o.x - 0.5) > 0.12]
    if not candidates:
        return None
    obj = candidates[int(rng.integers(len(candidates)))]
    side, other = ("left", "right") if obj.x < 0.5 else ("right", "left")
    return [(f"Is the {obj.shape} on the {side} side of the image?", "Yes"),
            (f"Is the {obj.shape} on the {other} side of the image?", "No")]


def _color(scene: Scene, rng: np.random.Generator) -> list[tuple[str, str]] | None:
    obj = scene.objects[int(rng.integers(len(scene.objects)))]
    worn = {o.colour for o in scene.objects if o.shape == obj.shape}
    wrong = str(rng.choice([c for c in COLOURS if c not in worn]))
    return [(f"Is there a {obj.colour} {obj.shape} in this image?", "Yes"),
            (f"Is there a {wrong} {obj.shape} in this image?", "No")]


_MME_BUILDERS = {"existence": _existence, "count": _count, "position": _position, "color": _color}


def mme_pair(scene: Scene, category: str, rng: np.random.Generator) -> list[tuple[str, str]] | None:
    """Two ``(question, answer)`` pairs about ``scene`` for an MME ``category`` (answers "Yes" then "No"), with
    MME's " Please answer yes or no." suffix; ``None`` when the scene cannot give a certain pair."""
    if category not in _MME_BUILDERS:
        raise ValueError(f"unknown MME category {category!r}; allowed: {', '.join(MME_CATEGORIES)}")
    pair = _MME_BUILDERS[category](scene, rng)
    return None if pair is None else [(q + MME_SUFFIX, a) for q, a in pair]


def image_qa_turns(scene: Scene, rng: np.random.Generator, num_turns: int) -> list[tuple[str, str]]:
    """``num_turns`` (prompt, answer) pairs about ``scene`` in the evaluation prompts' form, mixed as
    :data:`QUESTION_MIX` says: existence (balanced yes/no, negatives drawn uniformly among absent shapes, so theme
    priors survive, as in real instruction data; no shape asked twice, so no answer can be copied from an earlier
    turn), MME's colour, count and position questions, and captions. Yes/no answers are lowercase, as POPE's are."""
    kinds = list(QUESTION_MIX)
    weights = np.array([QUESTION_MIX[k] for k in kinds], dtype=float)
    turns: list[tuple[str, str]] = []
    asked: set[str] = set()
    while len(turns) < num_turns:
        kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
        if kind == "caption":
            turns.append((CAPTION_PROMPT, caption(scene)))
            continue
        if kind == "existence":
            present = sorted(scene.shapes_present() - asked)
            absent = [s for s in SHAPES if s not in scene.shapes_present() and s not in asked]
            if not present or not absent:
                continue
            shape, answer = (rng.choice(present), "yes") if rng.random() < 0.5 else (rng.choice(absent), "no")
            asked.add(str(shape))
            turns.append((f"Is there a {shape} in the image?" + SHORT_ANSWER_PROMPT, answer))
            continue
        pair = mme_pair(scene, kind, rng)
        if pair is None:
            continue
        question, answer = pair[int(rng.integers(2))]
        turns.append((question.removesuffix(MME_SUFFIX) + SHORT_ANSWER_PROMPT, answer.lower()))
    return turns
