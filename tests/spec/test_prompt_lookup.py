"""The prompt-lookup drafter, and speculative decoding through generate: lossless, with its statistics."""

import pytest
import torch

from mmaccel import accelerate, restore
from mmaccel.bench import _shapes_world_inputs
from mmaccel.patch import get_state
from mmaccel.spec import AcceptanceStats, PromptLookupCandidates
from mmaccel.spec.stats import merged_acceptance
from mmaccel.zoo import load
from mmaccel.zoo.tiny import sample_inputs, tiny_families

IMAGE = 99


def _drafter(num_tokens=4, max_ngram=3, eos=None):
    eos_ids = torch.tensor([eos]) if eos is not None else None
    return PromptLookupCandidates(num_tokens, max_ngram, 1, {IMAGE}, eos_ids, max_length=100,
                                  stats=AcceptanceStats())


def test_the_latest_match_of_the_longest_ngram_is_continued():
    sequence = torch.tensor([1, 2, 3, 4, 5, 9, 2, 3, 7, 8, 6, 2, 3])
    assert _drafter().draft(sequence, 4).tolist() == [7, 8, 6, 2]  # "2 3" last seen before "7 8 6"
    assert _drafter(max_ngram=1).draft(torch.tensor([5, 1, 6, 1]), 2).tolist() == [6, 1]
    assert _drafter().draft(torch.tensor([1, 2, 3]), 4).tolist() == []  # nothing repeats


def test_media_placeholders_are_never_drafted_nor_matched():
    sequence = torch.tensor([4, 5, IMAGE, IMAGE, 6, 4, 5])
    assert _drafter().draft(sequence, 4).tolist() == []  # the continuation runs into the image: cut to nothing
    assert _drafter().draft(torch.tensor([IMAGE, IMAGE, 3, IMAGE, IMAGE]), 2).tolist() == []
    assert _drafter(eos=2).draft(torch.tensor([7, 8, 2, 1, 1, 7, 8]), 4).tolist() == [2]  # stops at eos


def test_acceptance_statistics():
    stats = AcceptanceStats()
    stats.record(4, 2)
    stats.record(2, 0)
    summary = stats.summary()
    assert summary["mean_accepted_length"] == (2 + 2) / 2 and summary["acceptance_rate"] == 2 / 6
    assert summary["acceptance_by_position"] == [0.5, 0.5, 0.0, 0.0]


def test_greedy_output_is_the_models_on_the_bundled_image_model_with_drafts_accepted_and_rejected():
    model, processor = load("shapes-image")
    kwargs = dict(max_new_tokens=24, min_new_tokens=24, do_sample=False)
    with torch.no_grad():
        expected = [model.generate(**_shapes_world_inputs("shapes-image", processor, 1, seed), **kwargs)
                    for seed in range(12)]
        accelerate(model, spec={"method": "prompt_lookup"})
        try:
            got = [model.generate(**_shapes_world_inputs("shapes-image", processor, 1, seed), **kwargs)
                   for seed in range(12)]
            summary = get_state(model).components[0].acceptance()
        finally:
            restore(model)
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
    assert 0.1 < summary["acceptance_rate"] < 0.95 and summary["mean_accepted_length"] > 1.5
    assert model.generation_config.prompt_lookup_num_tokens is None and "_get_candidate_generator" not in \
        model.__dict__


@pytest.mark.parametrize("family", tiny_families())
def test_greedy_output_is_the_models_on_every_tiny_family(tiny, family):
    model, processor = tiny(family)
    kwargs = dict(max_new_tokens=12, min_new_tokens=12, do_sample=False)
    prompts = [sample_inputs(family, processor, batch_size=1, seed=seed) for seed in range(6)]
    with torch.no_grad():
        expected = [model.generate(**inputs, **kwargs) for inputs in prompts]
        accelerate(model, spec={"method": "prompt_lookup", "min_ngram": 1, "max_ngram": 1})
        try:
            got = [model.generate(**inputs, **kwargs) for inputs in prompts]
        finally:
            restore(model)
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))


def test_composes_with_the_mixed_precision_cache_and_refuses_batches(tiny):
    """Drafts verified and cropped in a mixed-precision cache. Not bit-for-bit the non-speculative mixed run: when
    a block is packed depends on how tokens were grouped into forwards (see the spec component's docstring), so
    only the answer's start is compared."""
    model, processor = tiny("llava")
    inputs = sample_inputs("llava", processor, batch_size=1, seed=3)
    kwargs = dict(max_new_tokens=30, min_new_tokens=30, do_sample=False, return_dict_in_generate=True)
    with torch.no_grad():
        accelerate(model, kv={"method": "mixed", "window": 8, "block": 16})
        try:
            expected = model.generate(**inputs, **kwargs).sequences
            accelerate(model, kv={"method": "mixed", "window": 8, "block": 16},
                       spec={"method": "prompt_lookup", "max_ngram": 1})
            out = model.generate(**inputs, **kwargs)
            summary = get_state(model).components[-1].acceptance()
            with pytest.raises(ValueError, match="batch_size = 1"):
                model.generate(**sample_inputs("llava", processor, batch_size=2), **kwargs)
        finally:
            restore(model)
    start = inputs["input_ids"].shape[1]
    assert torch.equal(out.sequences[:, :start + 10], expected[:, :start + 10])
    assert out.sequences.shape == expected.shape and summary["steps"] < 30  # some drafts were accepted
    assert out.cache.layers[0].packed_tokens > 0


def test_sampling_keeps_the_models_distribution():
    """Under sampling the model's own token is sampled at every drafted position and compared with the draft, so the
    output distribution is the model's: token frequencies of 200 sampled answers each way stay close (total
    variation under 0.25 at every position; two independent draws of 100 answers of the plain model give up to
    0.18)."""
    import collections

    model, processor = load("shapes-image")
    inputs = _shapes_world_inputs("shapes-image", processor, 1, 0)
    kwargs = dict(max_new_tokens=8, min_new_tokens=8, do_sample=True, top_k=0, temperature=0.5)
    start = inputs["input_ids"].shape[1]

    def draw(seed):
        torch.manual_seed(seed)
        return [model.generate(**inputs, **kwargs)[0, start:].tolist() for _ in range(200)]

    with torch.no_grad():
        plain = draw(0)
        accelerate(model, spec={"method": "prompt_lookup"})
        try:
            speculative = draw(1)
            steps = get_state(model).components[0].acceptance()["steps"]
        finally:
            restore(model)
    assert steps > 0
    for position in range(8):
        a = collections.Counter(x[position] for x in plain)
        b = collections.Counter(x[position] for x in speculative)
        assert 0.5 * sum(abs(a[k] - b[k]) / 200 for k in set(a) | set(b)) < 0.25, position


def test_acceptance_statistics_merge_by_their_counts():
    first, second = AcceptanceStats(), AcceptanceStats()
    first.record(4, 2)
    second.record(2, 0)
    second.record(1, 1)
    merged = merged_acceptance([first.summary(), second.summary()])
    assert merged["steps"] == 3 and merged["mean_accepted_length"] == (3 + 3) / 3
    assert merged["acceptance_rate"] == 3 / 7
    assert merged["acceptance_by_position"] == [2 / 3, 1 / 2, 0.0, 0.0]  # position 1: drafted twice, accepted once
