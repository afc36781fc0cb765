"""What the benchmark tasks share: the :class:`Sample` they produce, the :class:`Task` interface, and reading the
parquet shards and embedded images of the lmms-lab dataset repos."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq


class DataLayoutError(ValueError):
    """A ``--data`` folder that does not have the layout of the benchmark's dataset repo."""


class MediaError(RuntimeError):
    """A sample's image or video that is missing or cannot be decoded (the sample is recorded as an error)."""


@dataclass
class Sample:
    """One question of a benchmark.

    ``key`` is unique within the task and stable across runs (resume and sharding use it); ``index`` is the
    sample's place in the dataset order (results are merged in this order). ``kind`` is ``"image"`` or
    ``"video"``; ``load_media()`` returns a PIL image or a ``(frames, height, width, 3)`` uint8 array and raises
    :class:`MediaError` when it cannot. ``fields`` holds what the metrics group by (category, duration, ...)."""

    key: str
    index: int
    kind: str
    question: str
    answer: str
    load_media: Callable[[], Any]
    fields: dict[str, Any] = field(default_factory=dict)


class Task(Protocol):
    """A benchmark: how to read it, prompt it, parse answers and score them, as lmms-eval does."""

    #: Name on the command line.
    name: str
    #: lmms-eval's ``max_new_tokens`` for the task.
    max_new_tokens: int
    #: The metric the plot shows, as a path into :meth:`metrics`' result.
    headline: tuple[str, ...]
    #: The metrics the comparison table shows: column label → path into :meth:`metrics`' result.
    columns: dict[str, tuple[str, ...]]

    def load(self, data: Path, limit: int | None = None, **options: Any) -> list[Sample]:
        """The samples of the dataset at ``data``; ``limit`` keeps the first ``limit`` of each category."""

    def prompt(self, sample: Sample) -> str:
        """The text that follows the image or video in the user turn."""

    def parse(self, output: str) -> str:
        """The answer read from the model's raw output."""

    def metrics(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Scores of finished records (``parsed``, ``answer`` and ``fields`` of each, errors excluded)."""


def parquet_files(folder: Path, pattern: str, layout: str) -> list[Path]:
    """The shards matching ``pattern`` under ``folder``, sorted; :class:`DataLayoutError` naming ``layout`` if
    there are none."""
    files = sorted(folder.glob(pattern))
    if not files:
        raise DataLayoutError(f"no parquet files match {folder / pattern}; --data must be a local copy of {layout}")
    return files


def read_table(files: list[Path], required: tuple[str, ...]) -> pa.Table:
    """The shards concatenated; :class:`DataLayoutError` if a column in ``required`` is missing."""
    tables = [pq.read_table(path) for path in files]
    for path, table in zip(files, tables, strict=True):
        missing = [c for c in required if c not in table.column_names]
        if missing:
            raise DataLayoutError(f"{path} lacks the column(s) {', '.join(missing)}; it has "
                                  f"{', '.join(table.column_names)}")
    return pa.concat_tables(tables, promote_options="default")


def image_loader(table: pa.Table, row: int, column: str = "image") -> Callable[[], Any]:
    """A function that decodes the embedded image (a ``{bytes, path}`` struct) of ``row`` as RGB when called."""
    def load() -> Any:
        from PIL import Image

        value = table.column(column)[row].as_py()
        data = value.get("bytes") if isinstance(value, dict) else value
        if not data:
            raise MediaError(f"row {row} has no image bytes")
        try:
            return Image.open(io.BytesIO(data)).convert("RGB")
        except Exception as err:  # PIL raises several types for corrupt data
            raise MediaError(f"row {row}: the image cannot be decoded ({err.__class__.__name__}: {err})") from err

    return load


def first_per_group(samples: list[Sample], group: Callable[[Sample], str], limit: int | None) -> list[Sample]:
    """The first ``limit`` samples of each group, in dataset order (all when ``limit`` is ``None``)."""
    if limit is None:
        return samples
    taken: dict[str, int] = {}
    kept = []
    for sample in samples:
        name = group(sample)
        if taken.get(name, 0) < limit:
            taken[name] = taken.get(name, 0) + 1
            kept.append(sample)
    return kept


def safe_ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, or 0 when the denominator is 0 (as lmms-eval scores empty cases)."""
    return numerator / denominator if denominator else 0.0
