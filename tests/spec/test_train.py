"""The draft-head trainer's unrolled passes: each stands for what the head computes when it drafts."""

import pytest
import torch
from transformers import DynamicCache

from mmaccel.adapters import get_adapter
from mmaccel.spec.draft_head import DraftHead, head_positions
from mmaccel.spec.train import draft_token_accuracy, head_loss, unrolled_mask, unrolled_passes


def test_the_unrolled_mask_sees_real_keys_up_to_the_drafts_start_then_the_chain():
    mask = unrolled_mask(5, 2)
    assert mask.shape == (5, 15)
    # row 4 of pass 2: a draft started after position 2 -> real keys 0..2, pass 1's key 3, pass 2's key 4
    assert mask[4].nonzero().flatten().tolist() == [0, 1, 2, 5 + 3, 10 + 4]
    assert not mask[0, :5].any()  # row 0 of pass 2 has no real position that far back
    assert torch.equal(unrolled_mask(4, 0), torch.ones(4, 4).tril().bool())


# an M-RoPE prompt of 4 tokens, a 1x2 grid at tokens 1-2: (temporal, height, width) positions
GRID_PROMPT = torch.tensor([[0, 1, 1, 3], [0, 1, 1, 3], [0, 1, 2, 3]])[:, None]


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_each_unrolled_pass_equals_drafting_with_the_heads_cache(tiny, family):
    """Pass k's row at position p + k is the head's k + 1-th draft after the target verified position p."""
    model, _ = tiny(family)
    adapter = get_adapter(model)
    torch.manual_seed(0)
    head = DraftHead(adapter).eval()
    length, hidden = 12, adapter.text_config.hidden_size
    rope = GRID_PROMPT if adapter.multimodal_rope else None
    sample = {"tokens": torch.randint(0, 100, (length,)), "features": torch.randn(length, hidden), "visual": None,
              "start": 4, "prompt_rope": rope}
    with torch.no_grad():
        passes = unrolled_passes(head, adapter, sample, sample["features"][:-1], 3)
        tokens, features, verified = sample["tokens"], sample["features"], 6
        cache = DynamicCache()
        drafted = head(adapter, features[None, :verified + 1], tokens[None, 1:verified + 2],
                       head_positions(rope, 0, verified + 1, "cpu"), None, cache)[:, -1:]
        assert torch.allclose(drafted[0, 0], passes[0][verified], atol=1e-5)
        for step in (1, 2):
            position = verified + step
            drafted = head(adapter, drafted, tokens[None, position + 1:position + 2],
                           head_positions(rope, position, position + 1, "cpu"), None, cache)
            assert torch.allclose(drafted[0, 0], passes[step][position], atol=1e-5)
        assert not torch.allclose(passes[1][verified + 1], passes[0][verified + 1], atol=1e-3)


def test_unrolled_training_gives_a_finite_loss_with_gradients_and_accuracy_per_position(tiny):
    model, _ = tiny("llava")
    adapter = get_adapter(model)
    torch.manual_seed(0)
    head = DraftHead(adapter)
    sample = {"tokens": torch.randint(0, 100, (10,)), "features": torch.randn(10, adapter.text_config.hidden_size),
              "visual": None, "start": 3}
    loss = head_loss(head, adapter, sample, 0.1, torch.Generator().manual_seed(0), unroll=3)
    loss.backward()
    assert torch.isfinite(loss) and head.fc.weight.grad.abs().sum() > 0
    with torch.no_grad():
        accuracy = draft_token_accuracy(head, adapter, sample, depth=3)
    assert len(accuracy) == 3 and all(0.0 <= a <= 1.0 for a in accuracy)


def test_head_rows_sit_at_the_positions_of_the_tokens_they_carry():
    assert head_positions(None, 3, 6, "cpu").tolist() == [[4, 5, 6]]
    # rows 1..5 carry tokens 2..6: the grid's second token, the prompt's last, then text after a shift of
    # max position 3 + 1 - length 4 = 0
    assert head_positions(GRID_PROMPT, 1, 6, "cpu")[:, 0].tolist() == [[1, 3, 4, 5, 6], [1, 3, 4, 5, 6],
                                                                       [2, 3, 4, 5, 6]]
    shifted = GRID_PROMPT.clone()
    shifted[:, :, 3] = 7  # a prompt whose positions run ahead of its length: later text is shifted by 4
    assert head_positions(shifted, 5, 7, "cpu")[:, 0].tolist() == [[10, 11]] * 3
