"""LLaVA-family adapters on the real processors' output: spans, frames, positions and features agree."""

import pytest
import torch

from mmaccel.adapters import get_adapter
from mmaccel.adapters.llava import LlavaAdapter, LlavaNextAdapter, LlavaNextVideoAdapter, LlavaOnevisionAdapter
from mmaccel.zoo.tiny import family_modalities, sample_inputs
from mmaccel.zoo.tiny.llava import VIDEO_FRAMES

ADAPTERS = {"llava": LlavaAdapter, "llava_next": LlavaNextAdapter, "llava_next_video": LlavaNextVideoAdapter,
            "llava_onevision": LlavaOnevisionAdapter}
CASES = [(f, m, b) for f in ADAPTERS for m in family_modalities(f) for b in (1, 2)]


@pytest.mark.parametrize("family", list(ADAPTERS))
def test_detection_and_structure(tiny, family):
    model, _ = tiny(family)
    adapter = get_adapter(model)
    assert type(adapter) is ADAPTERS[family] and model.config.model_type == family
    assert adapter.language_model is model.model.language_model
    assert adapter.attention_modules == [layer.self_attn for layer in model.model.language_model.layers]
    assert adapter.vision_encoder is model.model.vision_tower
    assert adapter.text_config is model.config.text_config


@pytest.mark.parametrize("family,modality,batch", CASES)
def test_token_layout_matches_placeholders_and_features(tiny, family, modality, batch):
    model, processor = tiny(family)
    adapter = get_adapter(model)
    inputs = sample_inputs(family, processor, batch_size=batch, modality=modality, seed=7)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    layout = adapter.token_layout(**inputs)
    token_id = model.config.image_token_id if modality == "image" else model.config.video_token_id
    assert torch.equal(layout.visual_mask, ids == token_id)
    assert not layout.audio_mask.any()
    features = adapter.encode_vision(**inputs)
    assert len(features) == batch
    for row in range(batch):
        spans = layout.spans[row]
        covered = torch.zeros_like(mask[row], dtype=torch.bool)
        for span in spans:
            assert mask[row, span.start:span.end].all(), "padding inside a span"
            covered[span.start:span.end] = True
        if modality == "image":
            assert [s.kind for s in spans] == ["image"]
            assert torch.equal(covered, ids[row] == token_id)
            assert spans[0].length == features[row].shape[0]
        else:
            assert [s.frame for s in spans] == list(range(VIDEO_FRAMES))
            assert len({s.length for s in spans}) == 1 and spans[0].length == 4  # 4x4 grid pooled to 2x2
            trailing = 1 if family == "llava_onevision" else 0  # OneVision's newline belongs to no frame
            assert int(covered.sum()) + trailing == int((ids[row] == token_id).sum()) == features[row].shape[0]
            assert all(a.end == b.start for a, b in zip(spans, spans[1:], strict=False))


def test_anyres_images_of_two_shapes_get_different_token_counts(tiny):
    model, processor = tiny("llava_next")
    inputs = sample_inputs("llava_next", processor, batch_size=2, seed=0)
    layout = get_adapter(model).token_layout(**inputs)
    assert layout.images(0)[0].length != layout.images(1)[0].length


@pytest.mark.parametrize("family,modality,batch", [c for c in CASES if c[2] == 2])
def test_position_ids_are_what_the_decoder_receives(tiny, prefill_position_ids, family, modality, batch):
    model, processor = tiny(family)
    adapter = get_adapter(model)
    inputs = sample_inputs(family, processor, batch_size=batch, modality=modality, seed=8)
    assert (inputs["attention_mask"] == 0).any()
    seen = prefill_position_ids(adapter.decoder_layers[0], model, inputs)
    expected = adapter.position_ids(**inputs)
    mask = inputs["attention_mask"].bool()
    assert torch.equal(seen[mask], expected[mask])
