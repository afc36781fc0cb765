"""The eval report's speed summary: medians over the answers that say something about each figure."""

import pytest

from mmaccel.eval.report import speed_summary


def _record(ttft: float, tpot: float, new_tokens: int) -> dict:
    return {"ttft_s": ttft, "tpot_s": tpot, "latency_s": ttft + tpot * (new_tokens - 1), "new_tokens": new_tokens,
            "visual_tokens": 10, "visual_tokens_kept": 5, "kv_bytes": 2**20, "peak_memory_bytes": None}


def test_tpot_leaves_out_one_token_answers_and_answers_that_came_in_one_step():
    records = [_record(0.1, 0.002, 5), _record(0.1, 0.004, 5), _record(0.1, 0.0, 1),
               _record(0.2, 0.0, 5)]  # the last: speculative decoding gave the whole answer in its first step
    speed = speed_summary(records)
    assert speed["tpot_ms"] == pytest.approx(3.0)
    assert speed["ttft_ms"] == pytest.approx(100.0) and speed["kv_mb"] == pytest.approx(1.0)
    assert speed["peak_memory_mb"] is None
    assert speed_summary([_record(0.1, 0.0, 1)])["tpot_ms"] is None
