"""MME (lmms-lab/MME) as lmms-eval runs it: paired yes/no questions per image, acc and acc+.

Layout: ``data/test-*.parquet`` (2,374 rows in the real set). Columns: ``question_id`` (the image's path, e.g.
``code_reasoning/0020.png``), ``image``, ``question`` (ending " Please answer yes or no."), ``answer``
(``Yes``/``No``), ``category``. Each image has one yes and one no question.

Prompt: the question with " Please answer yes or no." removed, then ``"\\nAnswer the question using a single word
or phrase."``; 16 new tokens, greedy. Parse (lmms-eval's ``parse_pred_ans``): lowercase, strip, drop "."; exactly
yes/no → itself; one character: y → yes, n → no, else other; otherwise "yes" in the first four characters → yes,
else "no" there → no, else other.

Score: per (category, image), acc = 100 × share right and acc+ = 100 if both are right; a category's score is the
mean over its images of acc + acc+ (at most 200). Perception (10 categories, at most 2,000) and cognition (4, at most
800) are sums of category scores. An image whose two answers are not both available (an error, or a ``--limit``
that split a pair) is left out of its category and counted in ``incomplete_images``.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from .common import Sample, image_loader, parquet_files, read_table

PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork",
              "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
REPLACED = " Please answer yes or no."
POST_PROMPT = "\nAnswer the question using a single word or phrase."
LAYOUT = "lmms-lab/MME (data/test-*.parquet)"


def parse_pred_ans(text: str) -> str:
    """lmms-eval's MME answer parser: ``"yes"``, ``"no"`` or ``"other"``."""
    text = text.lower().strip().replace(".", "")
    if text in ("yes", "no"):
        return text
    if len(text) == 1:
        return {"y": "yes", "n": "no"}.get(text, "other")
    prefix = text[:4]
    return "yes" if "yes" in prefix else "no" if "no" in prefix else "other"


class Mme:
    """The MME task (see the module docstring)."""

    name = "mme"
    max_new_tokens = 16
    headline = ("perception",)
    columns = {"perception": ("perception",), "cognition": ("cognition",)}

    def load(self, data: Path, limit: int | None = None, **_: Any) -> list[Sample]:
        """All rows; ``limit`` keeps the first ``limit`` images (both their questions) of each category."""
        table = read_table(parquet_files(data, "data/test-*.parquet", LAYOUT),
                           ("question_id", "question", "answer", "category", "image"))
        values = {name: table.column(name).to_pylist() for name in ("question_id", "question", "answer",
                                                                     "category")}
        samples, images_taken, seen = [], defaultdict(set), defaultdict(int)
        for row in range(table.num_rows):
            category, image = values["category"][row], values["question_id"][row]
            if limit is not None and image not in images_taken[category]:
                if len(images_taken[category]) >= limit:
                    continue
            images_taken[category].add(image)
            seen[(category, image)] += 1
            samples.append(Sample(key=f"{category}/{image}#{seen[(category, image)]}", index=row, kind="image",
                                  question=values["question"][row],
                                  answer=parse_pred_ans(values["answer"][row]),
                                  load_media=image_loader(table, row),
                                  fields={"category": category, "image": image}))
        return samples

    def prompt(self, sample: Sample) -> str:
        """lmms-eval's ``mme_doc_to_text`` with its default post-prompt."""
        return sample.question.strip().replace(REPLACED, "") + POST_PROMPT

    def parse(self, output: str) -> str:
        """:func:`parse_pred_ans`."""
        return parse_pred_ans(output)

    def metrics(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Per-category acc, acc+ and score; perception and cognition totals."""
        by_image: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
        for record in records:
            fields = record["fields"]
            by_image[fields["category"]][fields["image"]].append(record["parsed"] == record["answer"])
        categories: dict[str, dict[str, float]] = {}
        incomplete = 0
        for category, images in sorted(by_image.items()):
            pairs = [scores for scores in images.values() if len(scores) == 2]
            incomplete += len(images) - len(pairs)
            if not pairs:
                continue
            acc = sum(sum(p) / 2 for p in pairs) / len(pairs) * 100
            acc_plus = sum(all(p) for p in pairs) / len(pairs) * 100
            categories[category] = {"images": len(pairs), "acc": acc, "acc_plus": acc_plus, "score": acc + acc_plus}
        result: dict[str, Any] = {"categories": categories, "incomplete_images": incomplete}
        for total, names in (("perception", PERCEPTION), ("cognition", COGNITION)):
            present = [n for n in names if n in categories]
            result[total] = sum(categories[n]["score"] for n in present)
            result[f"{total}_max"] = 200 * len(present)
        other = sorted(set(categories) - set(PERCEPTION) - set(COGNITION))
        if other:
            result["uncategorised"] = other
        return result
