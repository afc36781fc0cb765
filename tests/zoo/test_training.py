"""What the reference-model trainers share: rounds that continue each other and resume where a run stopped."""

import json

from mmaccel.zoo.training import train_in_rounds


def recording_train(calls):
    """A stand-in for a trainer: writes a model file and its training.json, records how it was called."""

    def train(out, init=None, **kwargs):
        out.mkdir(parents=True, exist_ok=True)
        (out / "model.safetensors").write_text(str(len(calls)))
        summary = {"wall_minutes": 2.0, "steps": kwargs["steps"], "history": [{"step": 0}]}
        (out / "training.json").write_text(json.dumps(summary))
        calls.append((out, init, kwargs))
        return summary

    return train


def test_a_stopped_recipe_resumes_at_the_round_it_was_in(tmp_path):
    rounds = ({"steps": 3}, {"steps": 2}, {"steps": 1})
    out = tmp_path / "model"
    calls = []
    (out / "round-1").mkdir(parents=True)
    (out / "round-1" / "training.json").write_text(json.dumps({"wall_minutes": 5.0, "steps": 3}))
    summary = train_in_rounds(recording_train(calls), out, rounds, tmp_path / "start", keep_rounds=True, lr=0.1)
    assert [(folder.name, init.name) for folder, init, _ in calls] == [("round-2", "round-1"), ("model", "round-2")]
    assert all(kwargs["lr"] == 0.1 for _, _, kwargs in calls)
    assert [r["steps"] for r in summary["rounds"]] == [3, 2, 1]
    assert summary["wall_minutes_all_rounds"] == 9.0
    assert (out / "round-1").is_dir() and (out / "round-2").is_dir()


def test_rounds_folders_go_unless_kept(tmp_path):
    calls = []
    train_in_rounds(recording_train(calls), tmp_path / "model", ({"steps": 1}, {"steps": 1}), None)
    assert calls[0][1] is None and calls[1][1] == tmp_path / "model" / "round-1"
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["model.safetensors", "training.json"]
