"""LLaVA-family adapters against the real processors' output and what the real models do at prefill.

The strongest checks capture the ``inputs_embeds`` the language model receives: every span must hold exactly the
features ``encode_vision`` returns for its image (or, for a frame, what encoding that frame alone gives), and every
position of ``image_newline_mask`` the learned ``image_newline`` vector.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from mmaccel.adapters import get_adapter
from mmaccel.adapters.llava import LlavaAdapter, LlavaNextAdapter, LlavaNextVideoAdapter, LlavaOnevisionAdapter
from mmaccel.zoo.tiny import build_tiny, family_modalities, sample_inputs
from mmaccel.zoo.tiny.llava import VIDEO_FRAMES
from mmaccel.zoo.tiny.media import make_image, make_video

ADAPTERS = {"llava": LlavaAdapter, "llava_next": LlavaNextAdapter, "llava_next_video": LlavaNextVideoAdapter,
            "llava_onevision": LlavaOnevisionAdapter}
CASES = [(f, m, b) for f in ADAPTERS for m in family_modalities(f) for b in (1, 2)]
VIDEO_FAMILIES = ["llava_next_video", "llava_onevision"]


def _prefill_embeds(model, inputs) -> torch.Tensor:
    """The ``inputs_embeds`` the language model receives in one forward over ``inputs``."""
    seen: list[torch.Tensor] = []

    def record(module, args, kwargs):
        seen.append(kwargs["inputs_embeds"])

    handle = model.model.language_model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        handle.remove()
    return seen[0]


def _check_layout(model, adapter, inputs, num_images: int, num_videos: int) -> None:
    """Spans partition the placeholders (bar OneVision's per-video newline), never touch padding, and hold exactly
    the features of their item as the model scatters them; frames hold what encoding that frame alone gives."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    layout = adapter.token_layout(**inputs)
    image_id = model.config.image_token_id
    video_id = getattr(model.config, "video_token_id", -1)
    placeholders = (ids == image_id) | (ids == video_id)
    assert torch.equal(layout.visual_mask, placeholders)
    assert not layout.audio_mask.any()
    trailing = 1 if isinstance(adapter, LlavaOnevisionAdapter) else 0

    features = adapter.encode_vision(**inputs)
    assert len(features) == num_images + num_videos
    image_features, video_features = features[:num_images], features[num_images:]
    embeds = _prefill_embeds(model, inputs)
    videos = inputs.get("pixel_values_videos")
    frame_features = [adapter.encode_vision(pixel_values_videos=videos[:, f:f + 1]) for f in range(VIDEO_FRAMES)] \
        if num_videos else []

    next_image = next_video = 0
    for row in range(ids.shape[0]):
        covered = torch.zeros_like(placeholders[row])
        for span in layout.spans[row]:
            assert span.length > 0 and mask[row, span.start:span.end].all(), "padding inside a span"
            assert not covered[span.start:span.end].any(), "overlapping spans"
            covered[span.start:span.end] = True
        assert all(a.end <= b.start for a, b in zip(layout.spans[row], layout.spans[row][1:], strict=False))
        images, frames = layout.images(row), layout.frames(row)
        assert [s.item for s in images] == list(range(len(images)))
        for span in images:
            assert ids[row, span.start:span.end].eq(image_id).all()
            assert torch.allclose(embeds[row, span.start:span.end], image_features[next_image], atol=1e-6)
            next_image += 1
        assert len(frames) % VIDEO_FRAMES == 0
        for start in range(0, len(frames), VIDEO_FRAMES):
            clip = frames[start:start + VIDEO_FRAMES]
            assert [s.frame for s in clip] == list(range(VIDEO_FRAMES))
            assert {s.item for s in clip} == {start // VIDEO_FRAMES}
            assert all(a.end == b.start for a, b in zip(clip, clip[1:], strict=False)), "gap between frames"
            assert len({s.length for s in clip}) == 1 and clip[0].length >= 2
            whole = video_features[next_video]
            assert whole.shape[0] == sum(s.length for s in clip) + trailing
            assert ids[row, clip[0].start:clip[-1].end + trailing].eq(video_id).all()
            for span in clip:
                alone = frame_features[span.frame][next_video][: span.length]
                assert torch.allclose(embeds[row, span.start:span.end], alone, atol=1e-5), "frame span mismatch"
            if trailing:  # OneVision: the newline right after the last frame, visual but in no span
                assert not covered[clip[-1].end] and placeholders[row, clip[-1].end]
                assert torch.allclose(embeds[row, clip[-1].end], model.model.image_newline)
            next_video += 1
        expected = placeholders[row].clone()
        if trailing and frames:
            expected[[clip.end for clip in frames if clip.frame == VIDEO_FRAMES - 1]] = False
        assert torch.equal(covered, expected)
    assert (next_image, next_video) == (num_images, num_videos)


@pytest.mark.parametrize("family", list(ADAPTERS))
def test_detection_and_structure(tiny, family):
    """get_adapter picks the family's adapter; structure properties point at the real modules."""
    model, _ = tiny(family)
    adapter = get_adapter(model)
    assert type(adapter) is ADAPTERS[family] and model.config.model_type == family in adapter.model_types
    assert set(adapter.modalities) == set(family_modalities(family))
    assert adapter.language_model is model.model.language_model
    assert list(adapter.decoder_layers) == list(model.model.language_model.layers)
    assert adapter.attention_modules == [layer.self_attn for layer in model.model.language_model.layers]
    assert adapter.vision_encoder is model.model.vision_tower
    assert adapter.projector is model.model.multi_modal_projector
    assert adapter.text_config is model.config.text_config


@pytest.mark.parametrize("family", list(ADAPTERS))
def test_text_config_key_routes_exactly_the_decoder_attention(tiny, family):
    """``set_attn_implementation({text_config_key: fn})``: every decoder attention calls ``fn``, nothing else does."""
    model, processor = tiny(family)
    adapter = get_adapter(model)
    modality = family_modalities(family)[-1]
    inputs = sample_inputs(family, processor, batch_size=2, modality=modality)
    called: list[torch.nn.Module] = []

    def probe(module, *args, **kwargs):
        called.append(module)
        return sdpa_attention_forward(module, *args, **kwargs)

    AttentionInterface.register("mmaccel_llava_probe", probe)
    AttentionMaskInterface.register("mmaccel_llava_probe", sdpa_mask)
    vision_before = model.config.vision_config._attn_implementation
    with torch.no_grad():
        reference = model(**inputs).logits
    try:
        model.set_attn_implementation({adapter.text_config_key: "mmaccel_llava_probe"})
        assert model.config.vision_config._attn_implementation == vision_before
        with torch.no_grad():
            logits = model(**inputs).logits
    finally:
        model.set_attn_implementation({adapter.text_config_key: "sdpa"})
    assert [id(m) for m in called] == [id(m) for m in adapter.attention_modules]
    assert torch.allclose(logits, reference, atol=1e-5)


@pytest.mark.parametrize("family,modality,batch", CASES)
def test_token_layout_on_processor_output(tiny, family, modality, batch):
    """Batch 1 and left-padded batch 2 from the real processor: spans are exactly each item's features."""
    model, processor = tiny(family)
    inputs = sample_inputs(family, processor, batch_size=batch, modality=modality, seed=7)
    if batch == 2:
        assert (inputs["attention_mask"] == 0).any()
    n = (batch, 0) if modality == "image" else (0, batch)
    _check_layout(model, get_adapter(model), inputs, *n)


@pytest.mark.parametrize("family", list(ADAPTERS))
def test_back_to_back_images_are_separate_spans(tiny, family):
    """``<image><image>`` (OneVision's real template renders a multi-image turn so) gives two spans, not one run;
    OneVision does not tile the images of a multi-image row, so their counts differ from a single image's."""
    model, processor = tiny(family)
    content = [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Compare them."}]
    texts = [processor.apply_chat_template([{"role": "user", "content": c}], add_generation_prompt=True,
                                           tokenize=False) for c in (content, content[1:])]
    texts[0] = texts[0].replace("<image>\n<image>", "<image><image>")  # Vicuna templates put a newline between
    assert "<image><image>" in texts[0]
    images = [[make_image(40, 20, seed=1), make_image(20, 36, seed=2)], [make_image(24, 24, seed=3)]]
    inputs = processor(text=texts, images=images, return_tensors="pt", padding=True)
    _check_layout(model, get_adapter(model), inputs, num_images=3, num_videos=0)
    layout = get_adapter(model).token_layout(**inputs)
    assert [len(layout.images(r)) for r in (0, 1)] == [2, 1]


@pytest.mark.parametrize("family", VIDEO_FAMILIES)
def test_image_and_video_in_one_row(tiny, family):
    """A row holding an image and a video: one image span, then the video's frame spans; a text-only-video row."""
    model, processor = tiny(family)
    both = [{"type": "image"}, {"type": "video"}, {"type": "text", "text": "Same scene?"}]
    texts = [processor.apply_chat_template([{"role": "user", "content": both}], add_generation_prompt=True,
                                           tokenize=False),
             processor.apply_chat_template([{"role": "user", "content": both[1:]}], add_generation_prompt=True,
                                           tokenize=False)]
    inputs = processor(text=texts, images=[make_image(40, 20, seed=4)],
                       videos=[make_video(VIDEO_FRAMES, 24, 24, seed=5), make_video(VIDEO_FRAMES, 20, 28, seed=6)],
                       return_tensors="pt", padding=True)
    adapter = get_adapter(model)
    _check_layout(model, adapter, inputs, num_images=1, num_videos=2)
    layout = adapter.token_layout(**inputs)
    assert [s.kind for s in layout.spans[0]] == ["image"] + ["frame"] * VIDEO_FRAMES
    assert [s.kind for s in layout.spans[1]] == ["frame"] * VIDEO_FRAMES


@pytest.mark.parametrize("family,modality", [(f, m) for f in ADAPTERS for m in family_modalities(f)])
def test_image_newline_mask_marks_exactly_the_learned_newline(tiny, family, modality):
    """Positions in ``image_newline_mask`` carry ``model.model.image_newline``; no other visual position does.
    Anyres images end each tile row with one; OneVision videos end with one; LLaVA-1.5 has none."""
    model, processor = tiny(family)
    adapter = get_adapter(model)
    inputs = sample_inputs(family, processor, batch_size=2, modality=modality, seed=9)
    newline = adapter.image_newline_mask(**inputs)
    visual = adapter.token_layout(**inputs).visual_mask
    assert not (newline & ~visual).any()
    if family == "llava":
        assert not newline.any()
        return
    embeds = _prefill_embeds(model, inputs)
    vector = model.model.image_newline.detach()
    assert torch.equal(embeds[newline], vector.expand(int(newline.sum()), -1))
    assert ((embeds[visual & ~newline] - vector).abs().amax(-1) > 0).all()
    if modality == "video":
        assert newline.sum(-1).tolist() == ([1, 1] if family == "llava_onevision" else [0, 0])
    else:
        assert (newline.sum(-1) >= 2).all()


def test_onevision_downsized_anyres_grid():
    """OneVision shrinks a tile grid larger than ``anyres_max_N`` bilinearly; counts and newlines follow it."""
    model, processor = build_tiny("llava_onevision", seed=1)
    model.config.vision_aspect_ratio = processor.vision_aspect_ratio = "anyres_max_1"
    inputs = sample_inputs("llava_onevision", processor, batch_size=2, seed=2)
    adapter = get_adapter(model)
    _check_layout(model, adapter, inputs, num_images=2, num_videos=0)
    layout = adapter.token_layout(**inputs)
    # 40x20 image → 1x2 tiles → 4x8 grid, shrunk by sqrt(32/16) to 2x5 plus 2 newlines, after the 16 base tokens
    assert layout.images(0)[0].length == 16 + 2 * 5 + 2
    assert adapter.image_newline_mask(**inputs)[0].sum() == 2


@pytest.mark.parametrize("family", list(ADAPTERS))
def test_counts_that_disagree_with_the_placeholders_raise(tiny, family):
    """A placeholder too many (input_ids not made for these pixel values) is an error, not a silent wrong span."""
    model, processor = tiny(family)
    inputs = dict(sample_inputs(family, processor, batch_size=1, modality="image", seed=3))
    adapter = get_adapter(model)
    ids = inputs["input_ids"].clone()
    first = int((ids[0] == model.config.image_token_id).nonzero()[0, 0])
    ids[0, first - 1] = model.config.image_token_id
    with pytest.raises(ValueError, match="image tokens"):
        adapter.token_layout(**{**inputs, "input_ids": ids})
    without_pixels = {k: v for k, v in inputs.items() if k not in ("pixel_values", "image_sizes")}
    assert len(adapter.token_layout(**without_pixels).images(0)) == 1  # falls back to the placeholder run


@pytest.mark.parametrize("family,modality,batch", CASES)
def test_position_ids_are_what_the_decoder_receives(tiny, prefill_position_ids, family, modality, batch):
    """Plain 1-D positions: the whole tensor layer 0 receives at generate's prefill, padding included."""
    model, processor = tiny(family)
    adapter = get_adapter(model)
    inputs = sample_inputs(family, processor, batch_size=batch, modality=modality, seed=8)
    seen = prefill_position_ids(adapter.decoder_layers[0], model, inputs)
    expected = adapter.position_ids(**inputs)
    assert seen.shape == expected.shape == inputs["input_ids"].shape
    assert torch.equal(seen, expected)
    if batch == 2:
        mask = inputs["attention_mask"]
        assert (mask == 0).any() and torch.equal(expected.amax(-1), mask.sum(-1) - 1)
