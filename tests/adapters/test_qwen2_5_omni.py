"""Qwen2.5-Omni thinker adapter: image, video and audio spans on the real processor's output; M-RoPE positions equal
what generate hands the language model."""

import pytest
import torch

from mmaccel.adapters import get_adapter
from mmaccel.adapters.qwen2_5_omni import Qwen2_5OmniThinkerAdapter
from mmaccel.zoo.tiny import sample_inputs

FAMILY = "qwen2_5_omni_thinker"


def test_detection_and_structure(tiny):
    model, _ = tiny(FAMILY)
    adapter = get_adapter(model)
    assert type(adapter) is Qwen2_5OmniThinkerAdapter
    assert adapter.vision_encoder is model.model.visual and adapter.audio_encoder is model.model.audio_tower
    assert adapter.attention_modules == [layer.self_attn for layer in model.model.language_model.layers]
    assert adapter.text_config is model.config.text_config


@pytest.mark.parametrize("modality", ["image", "video", "audio"])
@pytest.mark.parametrize("batch", [1, 2])
def test_spans_features_and_positions(tiny, prefill_position_ids, modality, batch):
    model, processor = tiny(FAMILY)
    adapter = get_adapter(model)
    inputs = sample_inputs(FAMILY, processor, batch_size=batch, modality=modality, seed=5)
    layout = adapter.token_layout(**inputs)
    token_id = getattr(model.config, f"{modality}_token_index")
    placeholders = inputs["input_ids"] == token_id
    if modality == "audio":
        assert torch.equal(layout.audio_mask, placeholders) and not layout.visual_mask.any()
        features = adapter.encode_audio(**inputs)
    else:
        assert torch.equal(layout.visual_mask, placeholders) and not layout.audio_mask.any()
        features = adapter.encode_vision(**inputs)
    for row in range(batch):
        spans = layout.spans[row]
        assert {s.kind for s in spans} == {"frame" if modality == "video" else modality}
        assert sum(s.length for s in spans) == features[row].shape[0] == int(placeholders[row].sum())
        assert all(inputs["attention_mask"][row, s.start:s.end].all() for s in spans)
    seen = prefill_position_ids(adapter.language_model, model, inputs)
    expected = adapter.position_ids(**inputs)
    mask = inputs["attention_mask"].bool()
    assert seen.shape == expected.shape == (4, batch, inputs["input_ids"].shape[1])
    assert torch.equal(seen[:, mask], expected[:, mask])


def test_audio_in_video_prompts_are_refused(tiny):
    model, processor = tiny(FAMILY)
    inputs = sample_inputs(FAMILY, processor, modality="video")
    with pytest.raises(ValueError, match="use_audio_in_video"):
        get_adapter(model).token_layout(**inputs, use_audio_in_video=True)
