"""Predictions on disk: one JSONL file per (configuration, rank), appended as each answer is made, so that a
killed run loses nothing it finished and a rerun with the same ``--out`` resumes.

Layout under ``--out``::

    run.json                          what was evaluated (task, model, data, ...); a rerun must match it
    predictions/<config>/rank<R>.jsonl one record per line
    results.json                      metrics and speed per configuration (written at the end)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: Keys of run.json that must match for a rerun to resume (anything else may change, e.g. the device).
IDENTITY = ("task", "model", "data", "split", "limit", "frames", "max_new_tokens")


class RunMismatchError(ValueError):
    """``--out`` holds a run of something else (another task, model, dataset or sampling)."""


def check_run(out: Path, identity: dict[str, Any], create: bool = True) -> None:
    """Check that an existing ``out/run.json`` describes the same evaluation, or (with ``create``) write it for a
    new run."""
    path = out / "run.json"
    if path.is_file():
        previous = json.loads(path.read_text())
        differ = [k for k in IDENTITY if previous.get(k) != identity.get(k)]
        if differ:
            detail = ", ".join(f"{k}: {previous.get(k)!r} there, {identity.get(k)!r} now" for k in differ)
            raise RunMismatchError(f"{out} holds another evaluation ({detail}); use a new --out, or the same "
                                   f"arguments to resume it")
        return
    if not create:
        return
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(identity, indent=2) + "\n")


class RecordStore:
    """The JSONL records of one configuration in ``out/predictions/<config>/``."""

    def __init__(self, out: Path, config: str):
        self.folder = out / "predictions" / config
        self._handle: Any = None

    def read(self) -> dict[str, dict[str, Any]]:
        """The latest record per sample key over every rank's file; a successful record beats an error, and a
        line cut short by a kill is ignored."""
        best: dict[str, dict[str, Any]] = {}
        for path in sorted(self.folder.glob("rank*.jsonl")):
            for line in path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                key = record["key"]
                if key not in best or best[key].get("error") or not record.get("error"):
                    best[key] = record
        return best

    def finished(self, retry_errors: bool = False) -> set[str]:
        """Keys of samples that need no new answer (errors included unless ``retry_errors``)."""
        return {key for key, record in self.read().items() if not (retry_errors and record.get("error"))}

    def append(self, record: dict[str, Any], rank: int) -> None:
        """Write ``record`` as one line of this rank's file and flush it to disk."""
        if self._handle is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / f"rank{rank}.jsonl"
            needs_newline = path.is_file() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
            self._handle = path.open("a", encoding="utf-8")
            if needs_newline:  # a kill cut the last line short: keep the next record on a line of its own
                self._handle.write("\n")
        self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._handle.flush()

    def close(self) -> None:
        """Close this rank's file."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
