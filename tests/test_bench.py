"""mmaccel bench: both sides on the same inputs, every field reported, JSON written, clear errors."""

import json

import pytest
import torch

from mmaccel.bench import format_table, prefill_media, run_bench
from mmaccel.cli import main
from mmaccel.config import AccelConfig
from mmaccel.zoo.tiny import sample_inputs

FIELDS = ["ttft_ms", "tpot_ms", "tokens_per_s", "peak_memory_mb", "kv_cache_mb", "visual_tokens",
          "visual_tokens_kept"]


def test_run_bench_reports_every_field_and_restores(tiny):
    import mmaccel

    model, processor = tiny("qwen2_vl")
    samples = [sample_inputs("qwen2_vl", processor, batch_size=2, seed=s) for s in range(2)]
    result = run_bench(model, samples, AccelConfig.preset("kernels"), max_new_tokens=4, repeats=2, warmup=0,
                       progress=False)
    summary = result["summary"]
    for side in ("baseline", "accelerated"):
        for field in FIELDS:
            assert summary[side][field] >= 0, (side, field)
        assert summary[side]["ttft_ms"] > 0 and summary[side]["kv_cache_mb"] > 0
        assert summary[side]["peak_memory_mb"] > 0
        assert summary[side]["visual_tokens"] == summary[side]["visual_tokens_kept"] > 0
    assert summary["tokens_match"] == 1.0
    assert len(result["samples"][0]["baseline"]["ttft_s"]) == 2
    assert result["samples"][0]["baseline"]["new_tokens"] == 4
    # The KV cache of 2 rows x (prompt + 4 - 1) positions, 2 layers, K and V, 2 kv heads x 16 dims, fp32.
    prompt = samples[0]["input_ids"].shape[1]
    expected = 2 * 2 * 2 * (prompt + 3) * 2 * 16 * 4
    assert result["samples"][0]["baseline"]["kv_bytes"] == expected
    assert not mmaccel.is_accelerated(model)
    table = format_table(result)
    assert "TTFT (ms)" in table and "tokens match baseline" in table


def test_cli_bench_writes_json_with_both_sides(tmp_path, capsys):
    out = tmp_path / "out.json"
    code = main(["bench", "--model", "tiny-qwen2_5_vl", "--samples", "1", "--repeats", "1", "--warmup", "0",
                 "--max-new-tokens", "3", "--json", str(out), "--no-progress"])
    assert code == 0
    data = json.loads(out.read_text())
    for side in ("baseline", "accelerated"):
        assert set(FIELDS) <= set(data["summary"][side])
    assert data["config"]["kernels"]["backend"] == "auto"
    assert "accel/base" in capsys.readouterr().out


def test_cli_unknown_model_is_a_clear_error(capsys):
    assert main(["bench", "--model", "tiny-gpt5", "--samples", "1"]) == 2
    err = capsys.readouterr().err
    assert "tiny-gpt5" in err and "tiny-llava" in err


def test_cli_unreachable_hub_id_is_a_clear_error(capsys, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # no 20 s of retries
    assert main(["bench", "--model", "no-such-org/no-such-model", "--samples", "1"]) == 2
    err = capsys.readouterr().err
    assert "no-such-org/no-such-model" in err and "Hub" in err


def test_cli_presets_and_config(capsys, tmp_path):
    assert main(["presets"]) == 0
    assert "kernels" in capsys.readouterr().out
    assert main(["config", "--preset", "kernels"]) == 0
    assert json.loads(capsys.readouterr().out)["kernels"]["backend"] == "auto"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kernels": {"backend": "warp"}}))
    assert main(["config", "--file", str(bad)]) == 2
    assert "kernels.backend='warp'" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["bench", "--preset", "nope"], ["frobnicate"]])
def test_cli_rejects_bad_arguments(argv):
    with pytest.raises(SystemExit) as err:
        main(argv)
    assert err.value.code == 2


@pytest.mark.parametrize("family", ["llava", "llava_next_video", "qwen2_vl", "qwen2_5_omni_thinker"])
def test_prefill_media_then_generate_equals_one_generate(tiny, family):
    """The question read against a cache holding the media gives the one-pass logits (M-RoPE families too)."""
    model, processor = tiny(family)
    inputs = sample_inputs(family, processor, batch_size=2, seed=1)
    kwargs = dict(max_new_tokens=4, do_sample=False, output_logits=True, return_dict_in_generate=True)
    with torch.no_grad():
        once = model.generate(**inputs, **kwargs)
        staged_inputs = prefill_media(model, inputs)
        assert 0 < staged_inputs["cache"].get_seq_length() < inputs["input_ids"].shape[1]
        staged = model.generate(**staged_inputs, **kwargs)
    assert torch.equal(once.sequences, staged.sequences)
    for a, b in zip(once.logits, staged.logits, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_speculative_runs_report_acceptance_overall_and_by_position(tiny):
    model, processor = tiny("llava")
    samples = [sample_inputs("llava", processor, batch_size=1, seed=s) for s in range(2)]
    config = AccelConfig.from_dict({"spec": {"method": "prompt_lookup", "min_ngram": 1, "max_ngram": 1}})
    result = run_bench(model, samples, config, max_new_tokens=12, repeats=1, warmup=0, progress=False)
    summary = result["summary"]
    per_sample = [s["accelerated"]["speculation"] for s in result["samples"]]
    steps = sum(s["steps"] for s in per_sample)
    accepted = sum(s["accepted"] for s in per_sample)
    assert summary["mean_accepted_length"] == (accepted + steps) / steps
    assert summary["acceptance_rate"] == accepted / sum(s["drafted"] for s in per_sample)
    first = sum(s["accepted_at"][0] for s in per_sample if s["accepted_at"]) / sum(s["drafted_at"][0]
                                                                                 for s in per_sample)
    assert summary["acceptance_by_position"][0] == pytest.approx(first)
    assert "acceptance by position" in format_table(result)


def test_stop_at_eos_ends_each_run_with_its_answer(tiny, monkeypatch):
    model, processor = tiny("qwen2_vl")
    sample = sample_inputs("qwen2_vl", processor, batch_size=1, seed=0)
    forced = run_bench(model, [sample], AccelConfig.preset("kernels"), max_new_tokens=5, repeats=1, warmup=0,
                       progress=False)
    answer = forced["samples"][0]["baseline"]["tokens"][0]
    monkeypatch.setattr(model.generation_config, "eos_token_id", answer[2])  # the answer ends at its third token
    forced_again = run_bench(model, [sample], AccelConfig.preset("kernels"), max_new_tokens=5, repeats=1, warmup=0,
                             progress=False)
    stopped = run_bench(model, [sample], AccelConfig.preset("kernels"), max_new_tokens=5, repeats=1, warmup=0,
                        progress=False, stop_at_eos=True)
    assert forced_again["samples"][0]["baseline"]["new_tokens"] == 5
    for side in ("baseline", "accelerated"):
        assert stopped["samples"][0][side]["new_tokens"] == answer.index(answer[2]) + 1
        assert stopped["summary"][side]["latency_ms"] > 0
    assert stopped["summary"]["tokens_match"] == 1.0

    monkeypatch.setattr(model.generation_config, "eos_token_id", answer[0])  # ends at once: no decoding to time
    ended = run_bench(model, [sample], AccelConfig.preset("kernels"), max_new_tokens=5, repeats=1, warmup=0,
                      progress=False, stop_at_eos=True)
    assert ended["summary"]["baseline"]["tpot_ms"] is None and ended["summary"]["ratio"]["tpot_ms"] is None
    assert "TPOT (ms)                              -             -           -" in format_table(ended)
