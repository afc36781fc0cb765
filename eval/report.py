"""Summaries of an evaluation: metrics and speed per configuration, speedups against the baseline, the
comparison table, ``results.json`` and a PNG plot of the headline metric against speedup."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from .common import Task


def metric_at(metrics: dict[str, Any], path: tuple[str, ...]) -> float | None:
    """The number at ``path`` in a task's metrics (``None`` if absent)."""
    value: Any = metrics
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return float(value)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def speed_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of TTFT, TPOT and latency (ms), mean visual tokens in the prompt and kept, median KV-cache bytes
    and the largest peak memory, over the answered records."""
    peaks = [r["peak_memory_bytes"] for r in records if r.get("peak_memory_bytes") is not None]
    return {
        "ttft_ms": _scaled(_median([r["ttft_s"] for r in records]), 1e3),
        "tpot_ms": _scaled(_median([r["tpot_s"] for r in records if r["new_tokens"] > 1 and r["tpot_s"] > 0]), 1e3),
        "latency_ms": _scaled(_median([r["latency_s"] for r in records]), 1e3),
        "visual_tokens": statistics.mean(r["visual_tokens"] for r in records) if records else None,
        "visual_tokens_kept": statistics.mean(r["visual_tokens_kept"] for r in records) if records else None,
        "kv_mb": _scaled(_median([r["kv_bytes"] for r in records]), 2**-20),
        "peak_memory_mb": max(peaks) / 2**20 if peaks else None,
    }


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def paired_speedup(baseline: list[dict[str, Any]], records: list[dict[str, Any]], field: str) -> float | None:
    """Median over the samples both answered of ``baseline[field] / records[field]`` (above 1: faster)."""
    base = {r["key"]: r[field] for r in baseline}
    ratios = [base[r["key"]] / r[field] for r in records if r["key"] in base and r[field] > 0]
    return _median(ratios)


def summarize(task: Task, merged: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per configuration: metrics of the answered records, error count and reasons, speed, and speedups against
    the first configuration (the baseline)."""
    names = list(merged)
    answered = {name: [r for r in merged[name] if not r.get("error")] for name in names}
    baseline = answered[names[0]]
    result: dict[str, Any] = {"baseline": names[0], "configurations": {}}
    for name in names:
        errors = [r for r in merged[name] if r.get("error")]
        metrics = task.metrics(answered[name])
        result["configurations"][name] = {
            "answered": len(answered[name]),
            "errors": len(errors),
            "error_reasons": dict(Counter(r["error"] for r in errors).most_common(5)),
            "headline": metric_at(metrics, task.headline),
            "columns": {label: metric_at(metrics, path) for label, path in task.columns.items()},
            "metrics": metrics,
            "speed": speed_summary(answered[name]),
            "speedup": {field: paired_speedup(baseline, answered[name], field)
                        for field in ("latency_s", "ttft_s")},
        }
    return result


def format_table(task: Task, summary: dict[str, Any]) -> str:
    """One row per configuration: the task's metrics, speed, speedups, visual tokens, KV-cache and peak memory,
    errors."""
    header = (f"{'config':<14}" + "".join(f"{label:>13}" for label in task.columns)
              + f"{'TTFT ms':>10}{'TPOT ms':>10}{'latency ms':>12}{'speedup':>9}{'TTFT x':>8}{'visual kept':>13}"
              f"{'KV MB':>8}{'peak MB':>10}{'errors':>8}")
    lines = [header, "-" * len(header)]
    for name, row in summary["configurations"].items():
        speed, speedup = row["speed"], row["speedup"]
        kept = speed["visual_tokens_kept"]
        visual = f"{kept:.0f}/{speed['visual_tokens']:.0f}" if kept is not None else "-"
        metrics = "".join(_fmt(row["columns"][label], 13, 4) for label in task.columns)
        lines.append(f"{name:<14}{metrics}{_fmt(speed['ttft_ms'], 10, 1)}"
                     f"{_fmt(speed['tpot_ms'], 10, 1)}{_fmt(speed['latency_ms'], 12, 1)}"
                     f"{_fmt(speedup['latency_s'], 8, 2)}x{_fmt(speedup['ttft_s'], 7, 2)}x{visual:>13}"
                     f"{_fmt(speed['kv_mb'], 8, 2)}{_fmt(speed['peak_memory_mb'], 10, 1)}{row['errors']:>8}")
    return "\n".join(lines)


def _fmt(value: float | None, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def write_results(out: Path, identity: dict[str, Any], summary: dict[str, Any]) -> Path:
    """``out/results.json``: what was run and the summary."""
    path = out / "results.json"
    path.write_text(json.dumps({"run": identity, **summary}, indent=2) + "\n")
    return path


def plot_accuracy_vs_speedup(task: Task, summary: dict[str, Any], path: Path) -> Path:
    """A PNG scatter of the headline metric (y) against latency speedup (x), one labelled point per
    configuration, drawn with Pillow (no plotting library needed)."""
    from PIL import Image, ImageDraw

    points = [(name, row["speedup"]["latency_s"], row["headline"])
              for name, row in summary["configurations"].items()
              if row["speedup"]["latency_s"] is not None and row["headline"] is not None]
    width, height, margin = 640, 480, 70
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    xs = [p[1] for p in points] + [1.0]
    ys = [p[2] for p in points]
    x_low, x_high = _padded_range(xs)
    y_low, y_high = _padded_range(ys or [0.0])

    def to_pixel(x: float, y: float) -> tuple[float, float]:
        return (margin + (x - x_low) / (x_high - x_low) * (width - 2 * margin),
                height - margin - (y - y_low) / (y_high - y_low) * (height - 2 * margin))

    draw.rectangle([margin, margin, width - margin, height - margin], outline="black")
    for fraction in (0.0, 0.5, 1.0):
        x = x_low + fraction * (x_high - x_low)
        y = y_low + fraction * (y_high - y_low)
        px, _ = to_pixel(x, y_low)
        _, py = to_pixel(x_low, y)
        draw.text((px - 12, height - margin + 6), f"{x:.2f}x", fill="black")
        draw.text((8, py - 6), f"{y:.3g}", fill="black")
    baseline_x, _ = to_pixel(1.0, y_low)
    draw.line([baseline_x, margin, baseline_x, height - margin], fill=(180, 180, 180))
    for name, x, y in points:
        px, py = to_pixel(x, y)
        draw.ellipse([px - 5, py - 5, px + 5, py + 5], fill=(40, 90, 200))
        draw.text((px + 8, py - 14), name, fill="black")
    draw.text((margin, 20), f"{task.name}: {'/'.join(task.headline)} vs speedup (median latency ratio)",
              fill="black")
    draw.text((width // 2 - 60, height - 30), "speedup over baseline", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def _padded_range(values: list[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    pad = (high - low) * 0.15 or max(abs(high) * 0.05, 0.05)
    return low - pad, high + pad
