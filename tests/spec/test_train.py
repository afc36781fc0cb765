"""The draft-head trainer: unrolled passes that stand for what the head computes when it drafts, the curriculum,
prompt files."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import DynamicCache

from mmaccel.adapters import get_adapter
from mmaccel.models import load_model
from mmaccel.spec.draft_head import DraftHead, head_positions, head_positions_of
from mmaccel.spec.train import (
    curriculum_is_multimodal,
    draft_token_accuracy,
    head_loss,
    unrolled_mask,
    unrolled_passes,
)
from mmaccel.spec.train import (
    main as train_main,
)


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
    # rows a pruned prefill kept (not contiguous): tokens 2, 4 and 7
    assert head_positions_of(GRID_PROMPT, torch.tensor([1, 3, 6]))[:, 0].tolist() == [[1, 4, 7], [1, 4, 7],
                                                                                     [2, 4, 7]]


def test_the_curriculum_starts_text_only_then_turns_multimodal():
    generator = torch.Generator().manual_seed(0)
    draws = [curriculum_is_multimodal(step, 100, 20, generator) for step in range(100)]
    assert not any(draws[:20]) and all(draws[60:])  # the ramp: 40 steps after the text-only 20
    assert 0 < sum(draws[20:60]) < 40


def _write_prompts(folder: Path) -> Path:
    Image.new("RGB", (64, 48), (200, 30, 30)).save(folder / "red.png")
    rows = [{"text": "What colour is it?", "image": "red.png"}, {"text": "Describe it.", "image": "red.png"},
            {"text": "Say something."}, {"text": "Count to three."}]
    path = folder / "prompts.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


def test_the_trainer_takes_a_prompt_file_for_an_m_rope_model_with_a_text_only_stage(tmp_path: Path):
    data = _write_prompts(tmp_path)
    assert train_main(["--model", "tiny-qwen2_vl", "--data", str(data), "--out", str(tmp_path), "--steps", "6",
                       "--new-tokens", "4", "--text-steps", "2"]) == 0
    summary = json.loads((tmp_path / "draft_head_training.json").read_text())
    assert summary["sequences"] == 2 and summary["text_sequences"] == 1 and summary["text_steps"] == 2
    assert len(summary["held_out_draft_accuracy_by_position"]) == 4  # the held-out tenth: the last prompt
    model, _ = load_model("tiny-qwen2_vl")
    DraftHead.load(get_adapter(model), tmp_path)


def test_prompt_files_and_models_without_prompts_are_refused_with_what_is_allowed(tmp_path: Path, capsys):
    with pytest.raises(SystemExit):
        train_main(["--model", "tiny-llava", "--out", str(tmp_path)])
    assert "is not a bundled model" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\n{"text": "b", "image": "x.png", "video": "y.mp4"}\n[1, 2\n')
    with pytest.raises(ValueError, match="bad.jsonl, line 2: a prompt is .* at most one of"):
        train_main(["--model", "tiny-llava", "--data", str(bad), "--out", str(tmp_path)])
    bad.write_text('{"text": "a"}\n[1, 2\n')
    with pytest.raises(ValueError, match="bad.jsonl, line 2: not a JSON object"):
        train_main(["--model", "tiny-llava", "--data", str(bad), "--out", str(tmp_path)])
    missing = tmp_path / "missing.jsonl"
    missing.write_text('{"text": "a", "image": "nowhere.png"}\n')
    with pytest.raises(ValueError, match="line 1: no image file at"):
        train_main(["--model", "tiny-llava", "--data", str(missing), "--out", str(tmp_path)])
