"""POPE (lmms-lab/POPE) as lmms-eval runs it: yes/no object-existence questions, exact-match parsing.

Layout: ``data/test-*.parquet`` (config ``default``: the three splits pooled, 9,000 rows) and
``Full/{adversarial,popular,random}-*.parquet`` (config ``Full``). Columns: ``id``, ``question_id``, ``question``,
``answer`` (``yes``/``no``), ``image_source``, ``category`` (the split), ``image`` (``{bytes, path}``).
``question_id`` restarts in each split, so samples are keyed on ``id``.

Prompt: the question, stripped, then ``"\\nAnswer the question using a single word or phrase."``; 128 new tokens,
greedy. Parse: ``output.lower().strip()``, right only if it equals the answer ("Yes." is neither yes nor no).
Metrics per category (split) and overall, as lmms-eval aggregates them: accuracy; precision, recall and F1 of
"yes" (FN counts answers that are exactly "no"); ``yes_ratio`` is lmms-eval's (the share of *ground-truth* yes,
always about 0.5); ``pred_yes_ratio`` is the share of *predictions* that are "yes" (what the POPE paper and LLaVA
call the yes-ratio); ``false_positive_rate`` is the share of absent objects the model says are there.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from .common import DataLayoutError, Sample, first_per_group, image_loader, parquet_files, read_table, safe_ratio

SPLITS = ("adversarial", "popular", "random")
POST_PROMPT = "\nAnswer the question using a single word or phrase."
LAYOUT = "lmms-lab/POPE (data/test-*.parquet, or Full/<split>-*.parquet with --split)"


class Pope:
    """The POPE task (see the module docstring)."""

    name = "pope"
    max_new_tokens = 128
    headline = ("overall", "f1")
    columns = {"accuracy": ("overall", "accuracy"), "F1": ("overall", "f1"),
               "yes (pred)": ("overall", "pred_yes_ratio")}

    def load(self, data: Path, limit: int | None = None, split: str | None = None, **_: Any) -> list[Sample]:
        """Rows of the pooled ``default`` config, or of one ``Full`` split; ``limit`` is per category."""
        if split is not None and split not in SPLITS:
            raise DataLayoutError(f"POPE split {split!r} does not exist; allowed: {', '.join(SPLITS)}")
        pattern = f"Full/{split}-*.parquet" if split else "data/test-*.parquet"
        table = read_table(parquet_files(data, pattern, LAYOUT), ("question", "answer", "category", "image"))
        values = {name: table.column(name).to_pylist() for name in ("question", "answer", "category")}
        ids = table.column("id").to_pylist() if "id" in table.column_names else None
        question_ids = table.column("question_id").to_pylist() if "question_id" in table.column_names else None
        samples = []
        for row in range(table.num_rows):
            category = values["category"][row]
            key = str(ids[row]) if ids else f"{category}/{question_ids[row] if question_ids else row}"
            samples.append(Sample(key=key, index=row, kind="image", question=values["question"][row],
                                  answer=values["answer"][row].lower().strip(), load_media=image_loader(table, row),
                                  fields={"category": category}))
        return first_per_group(samples, lambda s: s.fields["category"], limit)

    def prompt(self, sample: Sample) -> str:
        """lmms-eval's ``pope_doc_to_text``."""
        return sample.question.strip() + POST_PROMPT

    def parse(self, output: str) -> str:
        """lmms-eval's parse: lowercase and strip, nothing else."""
        return output.lower().strip()

    def metrics(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Metrics per category and overall."""
        groups: dict[str, list[dict]] = defaultdict(list)
        for record in records:
            groups["overall"].append(record)
            groups[record["fields"]["category"]].append(record)
        return {name: pope_scores([r["parsed"] for r in rows], [r["answer"] for r in rows])
                for name, rows in sorted(groups.items())}


def pope_scores(predictions: list[str], answers: list[str]) -> dict[str, float]:
    """lmms-eval's POPE aggregates of parsed predictions against ``yes``/``no`` answers, plus the predicted
    yes-ratio and the false-positive rate."""
    pairs = list(zip(predictions, answers, strict=True))
    tp = sum(p == "yes" and a == "yes" for p, a in pairs)
    fp = sum(p == "yes" and a == "no" for p, a in pairs)
    fn = sum(p == "no" and a == "yes" for p, a in pairs)
    precision, recall = safe_ratio(tp, tp + fp), safe_ratio(tp, tp + fn)
    return {
        "n": len(pairs),
        "accuracy": safe_ratio(sum(p == a for p, a in pairs), len(pairs)),
        "precision": precision,
        "recall": recall,
        "f1": safe_ratio(2 * precision * recall, precision + recall),
        "yes_ratio": safe_ratio(sum(a == "yes" for a in answers), len(answers)),
        "pred_yes_ratio": safe_ratio(sum(p == "yes" for p in predictions), len(predictions)),
        "false_positive_rate": safe_ratio(fp, sum(a == "no" for a in answers)),
        "unparsed": sum(p not in ("yes", "no") for p in predictions),
    }
