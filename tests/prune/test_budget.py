"""Fixed-budget pruning: lossless at keep_ratio 1, exact with respect to attending only to the kept tokens, and the
later layers' KV cache shrinks — for every family's tiny model."""

import pytest
import torch

from mmaccel import accelerate, restore
from mmaccel.adapters import get_adapter
from mmaccel.attention import SPARSE_ATTR
from mmaccel.kernels import sparse_attention
from mmaccel.memory import tensor_bytes
from mmaccel.patch import get_state
from mmaccel.prune.budget import plan_kept_tokens, visual_runs
from mmaccel.prune.common import PrefillInputs
from mmaccel.zoo.tiny import sample_inputs, tiny_families


def test_plan_keeps_text_and_the_best_of_each_run_and_equalizes_rows():
    visual = torch.tensor([[False, True, True, True, True, False, True, True, False],
                           [False, False, False, True, True, True, True, False, False]])
    assert visual_runs(visual) == [[(1, 5), (6, 8)], [(3, 7)]]
    scores = torch.tensor([[0.0, 0.1, 0.9, 0.3, 0.2, 0.0, 0.5, 0.4, 0.0],
                           [0.0, 0.0, 0.0, 0.1, 0.2, 0.8, 0.7, 0.0, 0.0]])
    inputs = PrefillInputs(visual=visual, real=torch.ones_like(visual), recent=1)
    kept = plan_kept_tokens(scores, inputs, keep_ratio=0.5)
    # row 0: text 0, 5, 8; best 2 of [1, 5): 2, 3; best 1 of [6, 8): 6 → 6 tokens
    # row 1: text 0, 1, 2, 7, 8; best 2 of [3, 7): 5, 6 → 7 tokens, so row 0 also keeps its next best (7)
    assert kept.tolist() == [[0, 2, 3, 5, 6, 7, 8], [0, 1, 2, 5, 6, 7, 8]]


@pytest.mark.parametrize("family", tiny_families())
def test_keep_all_is_identical_and_a_budget_shrinks_the_cache(tiny, family):
    model, processor = tiny(family)
    inputs = sample_inputs(family, processor, batch_size=2, seed=1)  # left-padded rows
    kwargs = dict(max_new_tokens=6, do_sample=False, return_dict_in_generate=True)
    with torch.no_grad():
        expected = model.generate(**inputs, **kwargs)
        try:
            accelerate(model, prune={"method": "budget", "keep_ratio": 1.0, "prune_layer": 1})
            same = model.generate(**inputs, **kwargs)
            accelerate(model, prune={"method": "budget", "keep_ratio": 0.25, "prune_layer": 1})
            pruned = model.generate(**inputs, **kwargs)
            kept = get_state(model).stats["visual_tokens_kept"]
        finally:
            restore(model)
    assert torch.equal(same.sequences, expected.sequences)
    assert pruned.sequences.shape == expected.sequences.shape
    assert tensor_bytes(pruned.cache) < tensor_bytes(expected.cache)
    real = inputs["attention_mask"].bool()
    visual = int((get_adapter(model).visual_token_mask(inputs["input_ids"]) & real).sum())
    assert 0 < kept < visual  # averaged over layers: layer 0 keeps all, the others a quarter


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])  # 1-D RoPE and M-RoPE
def test_pruned_prefill_equals_attending_only_to_the_kept_tokens(tiny, family):
    model, processor = tiny(family)
    inputs = sample_inputs(family, processor, batch_size=1, seed=2)
    with torch.no_grad():
        try:
            accelerate(model, prune={"method": "budget", "keep_ratio": 0.3, "prune_layer": 1})
            pruned = model(**inputs).logits[:, -1]
            kept = get_state(model).components[0].plan.kept
        finally:
            restore(model)
        assert kept.shape[1] < inputs["input_ids"].shape[1]
        # the reference: every layer from 1 on attends only to the kept keys, with the full sequence in place
        accelerate(model, kernels="torch")
        modules = get_state(model).adapter.attention_modules[1:]
        try:
            for module in modules:
                kv_heads = module.k_proj.out_features // module.head_dim
                index = kept[:, None, :].expand(1, kv_heads, -1)
                count = torch.full((1, kv_heads), kept.shape[1])
                setattr(module, SPARSE_ATTR, lambda q, k, v, mask, scaling, backend, index=index, count=count:
                        sparse_attention(q, k, v, index, count, scale=scaling, backend="torch")
                        if q.shape[2] == k.shape[2] > 1 else None)
            reference = model(**inputs).logits[:, -1]
        finally:
            for module in modules:
                module.__dict__.pop(SPARSE_ATTR, None)
            restore(model)
    torch.testing.assert_close(pruned, reference, atol=1e-4, rtol=1e-4)


def test_prune_layer_out_of_range_is_named(tiny):
    model, _ = tiny("llava")
    with pytest.raises(ValueError, match=r"prune\.prune_layer=9 must be between 1 and"):
        accelerate(model, prune={"method": "budget", "prune_layer": 9})
    assert get_state(model) is None
