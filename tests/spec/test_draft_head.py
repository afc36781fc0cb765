"""The MSD-style draft head: lossless through generate (trained or not), its trainer, and its errors."""

from pathlib import Path

import pytest
import torch

from mmaccel import ConfigError, accelerate, restore
from mmaccel.adapters import get_adapter
from mmaccel.bench import _shapes_world_inputs
from mmaccel.patch import get_state
from mmaccel.spec.draft_head import DraftHead
from mmaccel.spec.train import main as train_main
from mmaccel.zoo import load
from mmaccel.zoo.tiny import sample_inputs


def test_an_untrained_head_still_gives_the_models_greedy_output(tiny, tmp_path: Path):
    """Verification makes any head lossless: a random one only drafts badly."""
    model, processor = tiny("llava")
    torch.manual_seed(0)
    DraftHead(get_adapter(model)).save(tmp_path)
    kwargs = dict(max_new_tokens=16, min_new_tokens=16, do_sample=False)
    prompts = [sample_inputs("llava", processor, batch_size=1, seed=seed) for seed in range(4)]
    with torch.no_grad():
        expected = [model.generate(**inputs, **kwargs) for inputs in prompts]
        accelerate(model, spec={"method": "draft_head", "head": str(tmp_path)})
        try:
            got = [model.generate(**inputs, **kwargs) for inputs in prompts]
            assert get_state(model).components[0].acceptance()["steps"] > 0
        finally:
            restore(model)
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))


@pytest.mark.parametrize("name,prompts,new_tokens,first_seed", [("shapes-image", 8, 24, 500),
                                                                  ("shapes-video", 3, 16, 700)])
def test_each_bundled_models_head_is_lossless_and_accepted_often(name, prompts, new_tokens, first_seed):
    model, processor = load(name)
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    inputs_list = [_shapes_world_inputs(name, processor, 1, first_seed + seed) for seed in range(prompts)]
    with torch.no_grad():
        expected = [model.generate(**inputs, **kwargs) for inputs in inputs_list]
        accelerate(model, spec={"method": "draft_head"})
        try:
            got = [model.generate(**inputs, **kwargs) for inputs in inputs_list]
            summary = get_state(model).components[0].acceptance()
        finally:
            restore(model)
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
    assert summary["mean_accepted_length"] > 2.0


def test_the_trainer_writes_a_head_that_loads(tmp_path: Path):
    assert train_main(["--model", "shapes-image", "--out", str(tmp_path), "--samples", "3", "--steps", "4",
                       "--new-tokens", "6"]) == 0
    assert (tmp_path / "draft_head.safetensors").is_file() and (tmp_path / "draft_head_training.json").is_file()
    model, _ = load("shapes-image")
    DraftHead.load(get_adapter(model), tmp_path)


def test_missing_heads_and_unknown_methods_are_named(tiny, tmp_path: Path):
    model, _ = tiny("llava")
    with pytest.raises(FileNotFoundError, match="no draft head at .*python -m mmaccel.spec.train"):
        accelerate(model, spec={"method": "draft_head", "head": str(tmp_path)})
    restore(model)
    with pytest.raises(ConfigError, match="spec.method='eagle' is not allowed"):
        accelerate(model, spec={"method": "eagle"})
