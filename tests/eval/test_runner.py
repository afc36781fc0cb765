import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmaccel.eval.pope import Pope
from mmaccel.eval.report import format_table, plot_accuracy_vs_speedup, summarize
from mmaccel.eval.runner import Configuration, RunOptions, evaluate
from mmaccel.eval.store import RecordStore, RunMismatchError
from mmaccel.eval.videomme import VideoMme
from tests.eval.fixtures import write_pope, write_videomme

REPO = Path(__file__).resolve().parents[2]
IDENTITY = {"task": "pope", "model": "tiny-llava", "data": "fixture", "split": None, "limit": None, "frames": None,
            "max_new_tokens": 3}


def _options(**kwargs):
    return RunOptions(max_new_tokens=3, warmup=0, progress=False, **kwargs)


def test_compare_records_every_answer_and_a_corrupt_image_as_an_error(tiny, tmp_path: Path):
    model, processor = tiny("llava")
    task = Pope()
    samples = task.load(write_pope(tmp_path / "POPE", per_split=2, corrupt=3))
    configurations = [Configuration.parse("none"), Configuration.parse("kernels")]
    merged = evaluate(model, processor, task, samples, configurations, tmp_path / "run", IDENTITY, _options())
    assert list(merged) == ["none", "kernels"]
    for records in merged.values():
        assert [r["key"] for r in records] == [s.key for s in samples]
        errors = [r for r in records if r["error"]]
        assert [r["key"] for r in errors] == ["3"] and "cannot be decoded" in errors[0]["error"]
        answered = [r for r in records if not r["error"]]
        assert all(r["ttft_s"] > 0 and r["visual_tokens"] > 0 and r["peak_memory_bytes"] > 0 for r in answered)
        assert all(r["parsed"] == r["output"].lower().strip() for r in answered)
    # the kernels preset is lossless up to rounding: on the tiny model the answers are the same
    assert [r.get("output") for r in merged["none"]] == [r.get("output") for r in merged["kernels"]]
    summary = summarize(task, merged)
    assert summary["configurations"]["none"]["errors"] == 1
    assert summary["configurations"]["none"]["answered"] == 5
    assert summary["configurations"]["kernels"]["speedup"]["latency_s"] > 0
    assert "kernels" in format_table(task, summary)
    png = plot_accuracy_vs_speedup(task, summary, tmp_path / "plot.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


class _Killed(Exception):
    pass


class _DyingPope(Pope):
    """Raises as if the process were killed when it parses its ``dies_at``-th answer."""

    def __init__(self, dies_at: int):
        self.calls, self.dies_at = 0, dies_at

    def parse(self, output: str) -> str:
        self.calls += 1
        if self.calls == self.dies_at:
            raise _Killed
        return super().parse(output)


def test_resume_after_a_kill_loses_no_finished_sample(tiny, tmp_path: Path):
    model, processor = tiny("llava")
    samples = Pope().load(write_pope(tmp_path / "POPE", per_split=2))
    configurations = [Configuration.parse("none")]
    out = tmp_path / "run"
    with pytest.raises(_Killed):
        evaluate(model, processor, _DyingPope(dies_at=4), samples, configurations, out, IDENTITY, _options())
    finished = RecordStore(out, "none").read()
    assert sorted(finished) == ["0", "1", "2"]
    # a kill in the middle of a write leaves half a line; it is ignored and the next record starts a new line
    with (out / "predictions" / "none" / "rank0.jsonl").open("a") as handle:
        handle.write('{"key": "3", "outp')
    resumed = _DyingPope(dies_at=0)
    merged = evaluate(model, processor, resumed, samples, configurations, out, IDENTITY, _options())
    assert resumed.calls == 3  # only samples 3, 4, 5 were answered again
    assert [r["key"] for r in merged["none"]] == [s.key for s in samples]
    lines = (out / "predictions" / "none" / "rank0.jsonl").read_text().splitlines()
    assert sum(1 for line in lines if line.startswith('{"key": "0"')) == 1


def test_a_different_evaluation_in_the_same_out_is_refused(tiny, tmp_path: Path):
    model, processor = tiny("llava")
    samples = Pope().load(write_pope(tmp_path / "POPE", per_split=1))
    out = tmp_path / "run"
    evaluate(model, processor, Pope(), samples, [Configuration.parse("none")], out, IDENTITY, _options())
    with pytest.raises(RunMismatchError, match="model: 'tiny-llava' there, 'other' now"):
        evaluate(model, processor, Pope(), samples, [Configuration.parse("none")], out,
                 {**IDENTITY, "model": "other"}, _options())


def test_videomme_end_to_end_with_a_missing_video(tiny, tmp_path: Path):
    model, processor = tiny("llava_next_video")
    task = VideoMme()
    samples = task.load(write_videomme(tmp_path / "Video-MME", missing="vid1"), frames=4)
    merged = evaluate(model, processor, task, samples, [Configuration.parse("none")], tmp_path / "run",
                      {**IDENTITY, "task": "videomme"}, _options(measure_memory=False))
    records = merged["none"]
    assert [r["key"] for r in records if r["error"]] == ["002-1", "002-2"]
    assert all(r["parsed"] in ("", "A", "B", "C", "D") for r in records if not r["error"])
    assert all(r["peak_memory_bytes"] is None for r in records if not r["error"])
    metrics = summarize(task, merged)["configurations"]["none"]
    assert metrics["errors"] == 2 and metrics["metrics"]["overall"]["n"] == 4


def _cli(arguments: list[str], launcher: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, *launcher, *arguments], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def test_two_rank_sharded_run_equals_the_single_run(tmp_path: Path):
    data = write_pope(tmp_path / "POPE", per_split=3, corrupt=4)
    arguments = ["pope", "--model", "tiny-llava", "--data", str(data), "--max-new-tokens", "3", "--warmup", "0",
                 "--no-memory", "--no-progress"]
    _cli([*arguments, "--out", str(tmp_path / "single")], ["-m", "mmaccel.eval"])
    _cli([*arguments, "--out", str(tmp_path / "sharded")],
         ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "mmaccel.eval"])
    single = json.loads((tmp_path / "single" / "results.json").read_text())["configurations"]["none"]
    sharded = json.loads((tmp_path / "sharded" / "results.json").read_text())["configurations"]["none"]
    assert sharded["metrics"] == single["metrics"] and sharded["errors"] == single["errors"] == 1
    ranks = sorted(p.name for p in (tmp_path / "sharded" / "predictions" / "none").iterdir())
    assert ranks == ["rank0.jsonl", "rank1.jsonl"]


def test_a_failing_generate_is_recorded_and_the_run_goes_on(tiny, tmp_path: Path, monkeypatch):
    import mmaccel.eval.runner as runner

    model, processor = tiny("llava")
    samples = Pope().load(write_pope(tmp_path / "POPE", per_split=1))
    calls = []

    def flaky_generate(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real_generate(*args, **kwargs)

    real_generate = runner.timed_generate
    monkeypatch.setattr(runner, "timed_generate", flaky_generate)
    merged = evaluate(model, processor, Pope(), samples, [Configuration.parse("none")], tmp_path / "run", IDENTITY,
                      _options(measure_memory=False))
    errors = [r for r in merged["none"] if r["error"]]
    assert [r["key"] for r in errors] == ["1"] and "RuntimeError: CUDA out of memory" in errors[0]["error"]
    assert len(merged["none"]) == 3


def test_media_first_reads_the_question_against_the_cache_and_answers_alike(tiny, tmp_path: Path):
    """--media-first: the media are prefilled first and the question read against the cache; without compression
    the answers are those of the one-pass prefill."""
    model, processor = tiny("llava")
    task = Pope()
    samples = task.load(write_pope(tmp_path / "POPE", per_split=2))
    once = evaluate(model, processor, task, samples, [Configuration.parse("none")], tmp_path / "once", IDENTITY,
                    _options(measure_memory=False))["none"]
    staged = evaluate(model, processor, task, samples, [Configuration.parse("none")], tmp_path / "staged",
                      {**IDENTITY, "media_first": True}, _options(measure_memory=False, media_first=True))["none"]
    assert [r["output"] for r in staged] == [r["output"] for r in once]
    assert all(r["new_tokens"] == 3 and r["ttft_s"] > 0 for r in staged)
