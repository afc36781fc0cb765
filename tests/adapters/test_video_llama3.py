"""VideoLLaMA3 adapter: images, and video frames of unequal size after token compression."""

import pytest
import torch

from mmaccel.adapters import get_adapter
from mmaccel.adapters.video_llama3 import VideoLlama3Adapter
from mmaccel.zoo.tiny import sample_inputs


def test_detection_and_structure(tiny):
    model, _ = tiny("video_llama_3")
    adapter = get_adapter(model)
    assert type(adapter) is VideoLlama3Adapter
    assert adapter.vision_encoder is model.model.vision_model
    assert adapter.attention_modules == [layer.self_attn for layer in model.model.language_model.layers]


@pytest.mark.parametrize("batch", [1, 2])
def test_video_frames_follow_the_compression_mask(tiny, batch):
    model, processor = tiny("video_llama_3")
    adapter = get_adapter(model)
    inputs = sample_inputs("video_llama_3", processor, batch_size=batch, modality="video", seed=3)
    layout = adapter.token_layout(**inputs)
    counts = adapter.frame_token_counts(inputs["video_grid_thw"], inputs["video_merge_sizes"],
                                        inputs["video_compression_mask"])
    features = adapter.encode_vision(**inputs)
    ids = inputs["input_ids"]
    assert torch.equal(layout.visual_mask, ids == model.config.video_token_id)
    for row in range(batch):
        frames = layout.frames(row)
        assert [s.length for s in frames] == [n for n in counts[row] if n]
        assert sum(s.length for s in frames) == features[row].shape[0]
        assert all(inputs["attention_mask"][row, s.start:s.end].all() for s in frames)
        # frames are separated by their "Time t.ts:" text
        assert all(a.end < b.start for a, b in zip(frames, frames[1:], strict=False))
    assert any(len(set(per_video)) > 1 for per_video in counts), "compression should make frames differ in size"


@pytest.mark.parametrize("batch", [1, 2])
def test_images_and_positions(tiny, prefill_position_ids, batch):
    model, processor = tiny("video_llama_3")
    adapter = get_adapter(model)
    inputs = sample_inputs("video_llama_3", processor, batch_size=batch, modality="image", seed=4)
    layout = adapter.token_layout(**inputs)
    features = adapter.encode_vision(**inputs)
    for row in range(batch):
        (span,) = layout.images(row)
        assert span.length == features[row].shape[0]
        assert (inputs["input_ids"][row, span.start:span.end] == model.config.image_token_id).all()
    seen = prefill_position_ids(adapter.decoder_layers[0], model, inputs)
    mask = inputs["attention_mask"].bool()
    assert torch.equal(seen[mask], adapter.position_ids(**inputs)[mask])


def test_mismatched_compression_mask_is_reported(tiny):
    model, processor = tiny("video_llama_3")
    inputs = sample_inputs("video_llama_3", processor, modality="video", seed=3)
    inputs["video_compression_mask"] = torch.ones_like(inputs["video_compression_mask"])
    with pytest.raises(ValueError, match="does not match"):
        get_adapter(model).token_layout(**inputs)
