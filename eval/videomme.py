"""Video-MME (lmms-lab/Video-MME) as lmms-eval's ``videomme`` task runs it, scored both ways.

Layout: ``videomme/test-*.parquet`` (2,700 rows in the real set) and the videos as ``data/<videoID>.mp4`` (the
unpacked ``videos_chunked_NN.zip``) or the zip chunks themselves. Columns: ``video_id``, ``duration``
(short/medium/long), ``domain``, ``sub_category``, ``videoID``, ``question_id``, ``task_type``, ``question``,
``options`` (four strings that carry their letter, "A. ..."), ``answer`` (a letter).

Prompt (lmms-eval): the option prompt, the question, the options one per line, and "Answer with the option's letter
from the given choices directly."; ``--frames`` frames (lmms-eval: 32) sampled uniformly; 16 new tokens, greedy.
Parse: the official ``extract_characters_regex`` (answer prefixes removed — with the official list's two missing
commas kept — then "" for more than ten words without A-D, else the first of A-D).

Accuracy overall, per duration, per task type and per domain, with two denominators: ``accuracy`` is lmms-eval's
(right / all), ``accuracy_answered`` the official script's (right / questions whose extraction is not empty).
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from .common import Sample, first_per_group, parquet_files, read_table, safe_ratio
from .video import VideoFolder

OPTION_PROMPT = ("Select the best answer to the following multiple-choice question based on the video and the "
                 "subtitles. Respond with only the letter (A, B, C, or D) of the correct option.")
POST_PROMPT = "\nAnswer with the option's letter from the given choices directly."
# The official list lacks two commas, so Python joins those strings; the extraction keeps that behaviour.
ANSWER_PREFIXES = ("The best answer is", "The correct answer is", "The answer is", "The answer",
                   "The best option is" "The correct option is", "Best answer:" "Best option:")
LAYOUT = "lmms-lab/Video-MME (videomme/test-*.parquet, videos in data/ or the zip chunks)"
DEFAULT_FRAMES = 32


def extract_answer_letter(text: str) -> str:
    """Video-MME's official ``extract_characters_regex``: a letter A-D, or "" when none is found."""
    text = text.strip()
    for prefix in ANSWER_PREFIXES:
        text = text.replace(prefix, "")
    if len(text.split()) > 10 and not re.search("[ABCD]", text):
        return ""
    match = re.search(r"[ABCD]", text)
    return match[0] if match else ""


def videomme_prompt(question: str, options: list[str] | tuple[str, ...]) -> str:
    """lmms-eval's ``videomme_doc_to_text`` without subtitles."""
    return f"{OPTION_PROMPT}\n{question}\n" + "\n".join(options) + "\n" + POST_PROMPT


class VideoMme:
    """The Video-MME task (see the module docstring)."""

    name = "videomme"
    max_new_tokens = 16
    headline = ("overall", "accuracy")
    columns = {"accuracy": ("overall", "accuracy"), "acc answered": ("overall", "accuracy_answered")}

    def load(self, data: Path, limit: int | None = None, frames: int = DEFAULT_FRAMES, **_: Any) -> list[Sample]:
        """All questions; ``limit`` keeps the first ``limit`` of each duration. Frames are decoded when a sample
        is run, not here."""
        table = read_table(parquet_files(data, "videomme/test-*.parquet", LAYOUT),
                           ("videoID", "question_id", "duration", "task_type", "question", "options", "answer"))
        rows = table.drop_columns([c for c in table.column_names if c not in _COLUMNS]).to_pylist()
        videos = VideoFolder(data)
        samples = []
        for index, row in enumerate(rows):
            samples.append(Sample(
                key=str(row["question_id"]), index=index, kind="video", question=row["question"],
                answer=row["answer"].strip(),
                load_media=lambda video_id=row["videoID"]: videos.frames(video_id, frames),
                fields={"duration": row["duration"], "task_type": row["task_type"],
                        "domain": row.get("domain") or "", "videoID": row["videoID"],
                        "options": list(row["options"])}))
        return first_per_group(samples, lambda s: s.fields["duration"], limit)

    def prompt(self, sample: Sample) -> str:
        """lmms-eval's prompt for ``sample``."""
        return videomme_prompt(sample.question, sample.fields["options"])

    def parse(self, output: str) -> str:
        """:func:`extract_answer_letter`."""
        return extract_answer_letter(output)

    def metrics(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Accuracy (both denominators) overall and per duration, task type and domain."""
        groups: dict[str, list[dict]] = defaultdict(list)
        for record in records:
            fields = record["fields"]
            for name in ("overall", f"duration/{fields['duration']}", f"task_type/{fields['task_type']}",
                         f"domain/{fields['domain']}"):
                groups[name].append(record)
        result = {}
        for name, rows in sorted(groups.items()):
            right = sum(r["parsed"] == r["answer"] for r in rows)
            answered = sum(r["parsed"] != "" for r in rows)
            result[name] = {"n": len(rows), "accuracy": safe_ratio(right, len(rows)),
                            "accuracy_answered": safe_ratio(right, answered), "unanswered": len(rows) - answered}
        return result


_COLUMNS = ("videoID", "question_id", "duration", "task_type", "question", "options", "answer", "domain")
