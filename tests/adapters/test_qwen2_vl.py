"""Qwen2-VL / Qwen2.5-VL adapters against the real processors and what the real models do at prefill."""

from __future__ import annotations

import pytest
import torch

from mmaccel.adapters import get_adapter
from mmaccel.adapters.qwen2_vl import Qwen2_5_VLAdapter, Qwen2VLAdapter
from mmaccel.zoo.tiny import sample_inputs
from mmaccel.zoo.tiny.media import make_image, make_video

FAMILIES = ["qwen2_vl", "qwen2_5_vl"]
ADAPTERS = {"qwen2_vl": Qwen2VLAdapter, "qwen2_5_vl": Qwen2_5_VLAdapter}
CASES = [(f, m, b) for f in FAMILIES for m in ("image", "video") for b in (1, 2)]


def _capture_prefill(model, adapter, inputs, call):
    """Run ``call()`` and return the first (prefill) ``position_ids`` seen by the LM, layer 0 and the rotary."""
    seen: dict[str, object] = {}

    def hook(name):
        def record(module, args, kwargs):
            if name not in seen:
                seen[name] = kwargs["position_ids"] if "position_ids" in kwargs else args[1]
        return record

    handles = [
        adapter.language_model.register_forward_pre_hook(hook("lm"), with_kwargs=True),
        adapter.decoder_layers[0].register_forward_pre_hook(hook("layer0"), with_kwargs=True),
        adapter.language_model.rotary_emb.register_forward_pre_hook(hook("rotary"), with_kwargs=True),
    ]
    try:
        with torch.no_grad():
            call()
    finally:
        for handle in handles:
            handle.remove()
    return seen


@pytest.mark.parametrize("family", FAMILIES)
def test_detection_and_structure(tiny, family):
    """get_adapter picks the family's adapter; structure properties point at the real modules."""
    model, _ = tiny(family)
    adapter = get_adapter(model)
    assert type(adapter) is ADAPTERS[family]
    assert model.config.model_type in adapter.model_types
    assert adapter.modalities == ("image", "video")
    assert adapter.language_model is model.model.language_model
    assert list(adapter.decoder_layers) == list(model.model.language_model.layers)
    assert adapter.attention_modules == [layer.self_attn for layer in model.model.language_model.layers]
    assert adapter.vision_encoder is model.model.visual
    assert adapter.projector is model.model.visual.merger
    assert adapter.text_config is model.config.text_config
    assert adapter.frames_per_span == model.config.vision_config.temporal_patch_size == 2


@pytest.mark.parametrize("family", FAMILIES)
def test_text_config_key_switches_decoder_attention_only(tiny, family):
    """``set_attn_implementation({text_config_key: ...})`` reaches every decoder attention, not the vision tower."""
    model, _ = tiny(family)
    adapter = get_adapter(model)
    vision_before = model.model.visual.config._attn_implementation
    try:
        model.set_attn_implementation({adapter.text_config_key: "eager"})
        assert all(m.config._attn_implementation == "eager" for m in adapter.attention_modules)
        assert model.model.visual.config._attn_implementation == vision_before
    finally:
        model.set_attn_implementation({adapter.text_config_key: "sdpa"})
    assert all(m.config._attn_implementation == "sdpa" for m in adapter.attention_modules)


def _check_layout(model, adapter, inputs):
    """Spans cover exactly the placeholder tokens, frames split by temporal group, counts match encode_vision."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    layout = adapter.token_layout(**inputs)
    image_id, video_id = model.config.image_token_id, model.config.video_token_id
    expected = (ids == image_id) | (ids == video_id)
    assert torch.equal(layout.visual_mask, expected)
    assert not layout.audio_mask.any()
    assert len(layout.spans) == ids.shape[0]
    lengths = []
    for row, spans in enumerate(layout.spans):
        covered = torch.zeros_like(expected[row])
        for span in spans:
            assert not covered[span.start:span.end].any()
            covered[span.start:span.end] = True
            wanted = image_id if span.kind == "image" else video_id
            assert (ids[row, span.start:span.end] == wanted).all()
            assert mask[row, span.start:span.end].all()
        assert torch.equal(covered, expected[row])
        assert [s.start for s in spans] == sorted(s.start for s in spans)
        lengths.extend(s.length for s in layout.images(row))
    features = adapter.encode_vision(**inputs)
    video_lengths = []
    merge = adapter.spatial_merge_size ** 2
    grids = inputs.get("video_grid_thw")
    video_rows = [(row, s) for row in range(ids.shape[0]) for s in layout.frames(row)]
    if grids is not None:
        groups = iter(grids.tolist())
        for row in range(ids.shape[0]):
            for item in sorted({s.item for s in layout.frames(row)}):
                frames = [s for s in layout.frames(row) if s.item == item]
                t, h, w = next(groups)
                assert [s.frame for s in frames] == list(range(t))
                assert all(s.length == h * w // merge for s in frames)
                assert all(a.end == b.start for a, b in zip(frames[:-1], frames[1:], strict=True))
                video_lengths.append(sum(s.length for s in frames))
    else:
        assert video_rows == []
    assert [f.shape[0] for f in features] == lengths + video_lengths
    assert all(f.shape[1] == model.config.text_config.hidden_size for f in features)
    return layout


@pytest.mark.parametrize(("family", "modality", "batch_size"), CASES)
def test_token_layout_on_processor_output(tiny, family, modality, batch_size):
    """Layout of the real processor output, batch 1 and left-padded batch 2."""
    model, processor = tiny(family)
    adapter = get_adapter(model)
    inputs = sample_inputs(family, processor, batch_size=batch_size, modality=modality)
    if batch_size == 2:
        assert (inputs["attention_mask"] == 0).any()
    layout = _check_layout(model, adapter, inputs)
    for row in range(batch_size):
        if modality == "image":
            assert len(layout.images(row)) == 1 and layout.frames(row) == []
        else:
            assert layout.images(row) == [] and len(layout.frames(row)) >= 2
        # the structure tokens sit just outside each item
        first, last = layout.spans[row][0], layout.spans[row][-1]
        assert inputs["input_ids"][row, first.start - 1] == model.config.vision_start_token_id
        assert inputs["input_ids"][row, last.end] == model.config.vision_end_token_id


@pytest.mark.parametrize("family", FAMILIES)
def test_token_layout_mixed_and_adjacent_items(tiny, family):
    """Two images and a video in one row, a second row with one image; adjacent images are cut by the grid."""
    model, processor = tiny(family)
    adapter = get_adapter(model)
    content = [{"type": "image"}, {"type": "video"}, {"type": "image"}, {"type": "text", "text": "Compare them."}]
    text0 = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                          tokenize=False)
    text1 = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "And this?"}]}],
        add_generation_prompt=True, tokenize=False)
    images = [make_image(40, 32, seed=1), make_image(16, 24, seed=2), make_image(24, 24, seed=3)]
    inputs = processor(text=[text0, text1], images=images, videos=[make_video(5, 24, 24, seed=4)],
                       return_tensors="pt", padding=True)
    assert inputs["video_grid_thw"][0, 0].item() == 3  # 5 frames padded to 6 -> 3 temporal groups
    layout = _check_layout(model, adapter, inputs)
    kinds = [(s.kind, s.item, s.frame) for s in layout.spans[0]]
    assert kinds == [("image", 0, None), ("frame", 0, 0), ("frame", 0, 1), ("frame", 0, 2), ("image", 1, None)]
    assert [(s.kind, s.item) for s in layout.spans[1]] == [("image", 0)]
    # adjacent images: drop the vision_end / vision_start pair between two image runs of one row
    image_id = model.config.image_token_id
    ids = torch.tensor([[1, 2] + [image_id] * 20 + [image_id] * 6 + [3]])
    two = adapter.token_layout(ids, image_grid_thw=inputs["image_grid_thw"][:2])
    assert [(s.start, s.end, s.item) for s in two.images(0)] == [(2, 22, 0), (22, 28, 1)]
    with pytest.raises(ValueError):
        adapter.token_layout(ids, image_grid_thw=inputs["image_grid_thw"][1:])
    # positions of the mixed batch (Qwen2.5-VL: no video metadata, so 24 fps is assumed) match generate's
    seen = _capture_prefill(model, adapter, inputs,
                            lambda: model.generate(**inputs, max_new_tokens=1, do_sample=False))
    assert torch.equal(seen["lm"], adapter.position_ids(**inputs))


@pytest.mark.parametrize(("family", "modality", "batch_size"), CASES)
def test_position_ids_equal_what_generate_feeds_the_decoder(tiny, family, modality, batch_size):
    """(4, B, L): the LM receives all of it, layer 0 the text row, the rotary rows 1..3 (generate, prefill)."""
    model, processor = tiny(family)
    adapter = get_adapter(model)
    inputs = sample_inputs(family, processor, batch_size=batch_size, modality=modality)
    model.model.rope_deltas = None
    expected = adapter.position_ids(**inputs)
    assert model.model.rope_deltas is None  # the adapter leaves the module state alone
    seen = _capture_prefill(model, adapter, inputs,
                            lambda: model.generate(**inputs, max_new_tokens=2, do_sample=False))
    length = inputs["input_ids"].shape[1]
    assert expected.shape == (4, batch_size, length)
    assert torch.equal(seen["lm"], expected)
    assert torch.equal(seen["layer0"], expected[0])
    assert torch.equal(seen["rotary"], expected[1:])
    # M-RoPE really differs from 1-D positions on the visual tokens, and padding sits at 0
    assert not torch.equal(expected[1], expected[0])
    pad = inputs["attention_mask"] == 0
    assert (expected[:, pad] == 0).all()
    assert torch.equal(adapter.rope_deltas(**inputs), model.model.rope_deltas)


@pytest.mark.parametrize("family", FAMILIES)
def test_plain_forward_gets_the_mrope_rows_only(tiny, family):
    """A forward without ``position_ids`` hands the LM rows 1..3 and the decoder layers ``None``."""
    model, processor = tiny(family)
    adapter = get_adapter(model)
    inputs = sample_inputs(family, processor, batch_size=2, modality="video")
    expected = adapter.position_ids(**inputs)
    seen = _capture_prefill(model, adapter, inputs, lambda: model(**inputs))
    assert torch.equal(seen["lm"], expected[1:])
    assert seen["layer0"] is None
    model.model.rope_deltas = None


@pytest.mark.parametrize("family", FAMILIES)
def test_position_ids_without_token_types_mirror_the_model(tiny, family):
    """Without ``mm_token_type_ids`` transformers falls back to 1-D positions; the adapter says the same."""
    model, processor = tiny(family)
    adapter = get_adapter(model)
    inputs = dict(sample_inputs(family, processor, batch_size=2, modality="image"))
    inputs.pop("mm_token_type_ids")
    expected = adapter.position_ids(**inputs)
    assert torch.equal(expected[1], expected[0])
    seen = _capture_prefill(model, adapter, inputs,
                            lambda: model.generate(**inputs, max_new_tokens=1, do_sample=False))
    assert torch.equal(seen["lm"], expected)


@pytest.mark.parametrize("family", FAMILIES)
def test_video_temporal_positions(tiny, family):
    """Temporal M-RoPE steps by 1 per group in Qwen2-VL, by tokens_per_second * second_per_grid_ts in Qwen2.5-VL."""
    model, processor = tiny(family)
    adapter = get_adapter(model)
    inputs = sample_inputs(family, processor, batch_size=1, modality="video")
    positions = adapter.position_ids(**inputs)
    frames = adapter.token_layout(**inputs).frames(0)
    starts = [positions[1, 0, f.start].item() for f in frames]
    if family == "qwen2_vl":
        step = 1
    else:  # fps 1 -> 2 s per temporal group
        step = model.config.vision_config.tokens_per_second * inputs["second_per_grid_ts"][0].item()
        assert step == 4
    assert starts == [starts[0] + step * k for k in range(len(frames))]
    for f in frames:  # one temporal position per group
        assert (positions[1, 0, f.start:f.end] == positions[1, 0, f.start]).all()
