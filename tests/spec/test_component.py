"""Every drafter through ``generate``: on every family's tiny model (50 prompts each) and beside prefill pruning,
greedy output unchanged."""

from pathlib import Path

import pytest
import torch

from mmaccel import accelerate, restore
from mmaccel.adapters import get_adapter
from mmaccel.bench import _shapes_world_inputs
from mmaccel.patch import get_state
from mmaccel.spec.draft_head import DraftHead
from mmaccel.zoo import load
from mmaccel.zoo.tiny import family_modalities, sample_inputs, tiny_families

PROMPTS = 50
KWARGS = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False)


@pytest.mark.parametrize("family", tiny_families())
def test_every_drafter_keeps_the_greedy_output_on_fifty_prompts(tiny, smaller_tiny, family, tmp_path: Path):
    model, processor = tiny(family)
    modalities = family_modalities(family)
    prompts = [sample_inputs(family, processor, batch_size=1, modality=modalities[seed % len(modalities)],
                             seed=seed) for seed in range(PROMPTS)]
    torch.manual_seed(0)
    DraftHead(get_adapter(model)).save(tmp_path)
    drafters = {"prompt_lookup": ({"method": "prompt_lookup", "min_ngram": 1, "max_ngram": 1}, None),
                "draft_head": ({"method": "draft_head", "head": str(tmp_path)}, None),
                "draft_model": ({"method": "draft_model", "num_tokens": 4}, smaller_tiny(family))}
    with torch.no_grad():
        expected = [model.generate(**inputs, **KWARGS) for inputs in prompts]
        for name, (spec, drafter) in drafters.items():
            accelerate(model, spec=spec, drafter=drafter)
            try:
                got = [model.generate(**inputs, **KWARGS) for inputs in prompts]
                steps = get_state(model).components[0].acceptance()["steps"]
            finally:
                restore(model)
            different = [i for i, (a, b) in enumerate(zip(got, expected, strict=True)) if not torch.equal(a, b)]
            assert not different, f"{name}: prompts {different} differ from the plain model's output"
            assert steps > 0, f"{name} never verified a draft"


@pytest.mark.parametrize("prune", [{"method": "budget", "keep_ratio": 0.25, "prune_layer": 2}, {"method": "dynamic"}])
def test_drafts_are_verified_against_the_model_as_pruned(prune):
    """Verification forwards read several tokens against the cache: the pruning keeps the prefill's plan for them
    (it used to take them for new prompts); a budget-pruned prefill returns the kept positions' features only,
    and the draft head reads those. The draft model is the bundled one in the model's folder, found by default."""
    model, processor = load("shapes-image")
    prompts = [_shapes_world_inputs("shapes-image", processor, 1, 900 + seed) for seed in range(3)]
    kwargs = dict(max_new_tokens=16, min_new_tokens=16, do_sample=False)
    with torch.no_grad():
        accelerate(model, prune=prune)
        try:
            expected = [model.generate(**inputs, **kwargs) for inputs in prompts]
            for spec, accepted_length in (("prompt_lookup", 1.0), ("draft_head", 2.0), ("draft_model", 2.0)):
                accelerate(model, prune=prune, spec=spec)
                got = [model.generate(**inputs, **kwargs) for inputs in prompts]
                summary = next(c for c in get_state(model).components if c.name == "spec").acceptance()
                assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True)), spec
                assert summary["mean_accepted_length"] > accepted_length, spec  # drafts were accepted
        finally:
            restore(model)
