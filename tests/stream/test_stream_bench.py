"""The streaming benchmark end to end on a tiny model, and a stream configuration in the eval harness."""

import json
from pathlib import Path

from mmaccel.eval.runner import Configuration, RunOptions, evaluate
from mmaccel.eval.videomme import VideoMme
from mmaccel.stream.bench import main
from tests.eval.fixtures import write_videomme


def _config(tmp_path: Path) -> str:
    path = tmp_path / "carriers.json"
    path.write_text(json.dumps({"stream": {"method": "carrier", "max_frames": 8, "topk_tokens": 1}}))
    return str(path)


def test_stream_bench_writes_its_table_json_and_plot(tmp_path: Path):
    assert main(["--model", "tiny-llava_next_video", "--preset", _config(tmp_path), "--frames", "32",
                 "--latency-frames", "4", "--repeats", "1", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "stream_bench.json").read_text())
    stream, dense = result["sweeps"]["stream (carriers)"], result["sweeps"]["dense stream"]
    assert [r["frames"] for r in stream] == [16, 32] == [r["frames"] for r in dense]
    assert dense[1]["tokens_in_cache"] > dense[0]["tokens_in_cache"] > stream[0]["tokens_in_cache"]
    assert stream[1]["tokens_in_cache"] == stream[0]["tokens_in_cache"]  # the bank was full at 16 frames
    assert result["latency"]["dense_prompt_tokens"] > result["latency"]["stream_tokens_in_cache"]
    assert (tmp_path / "stream_memory.png").read_bytes()[:4] == b"\x89PNG"


def test_a_stream_configuration_answers_videos_through_a_session(tiny, tmp_path: Path):
    model, processor = tiny("llava_next_video")
    task = VideoMme()
    samples = task.load(write_videomme(tmp_path / "Video-MME"), frames=4)
    identity = {"task": "videomme", "model": "tiny", "data": "fixture", "split": None, "limit": None, "frames": 4,
                "max_new_tokens": 3}
    configurations = [Configuration.parse("none"), Configuration.parse(_config(tmp_path))]
    merged = evaluate(model, processor, task, samples, configurations,
                      tmp_path / "run", identity, RunOptions(max_new_tokens=3, warmup=0, progress=False,
                                                             measure_memory=False))
    streamed = [r for r in merged["carriers"] if not r["error"]]
    assert len(streamed) == len(samples)
    assert all(r["ingest_s_per_frame"] > 0 and r["visual_tokens_kept"] < r["visual_tokens"] for r in streamed)
    assert all("ingest_s_per_frame" not in r for r in merged["none"])
