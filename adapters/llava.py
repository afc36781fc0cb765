"""Adapters for the LLaVA family: LLaVA-1.5 (``llava``), LLaVA-NeXT (``llava_next``), LLaVA-NeXT-Video
(``llava_next_video``) and LLaVA-OneVision (``llava_onevision``), on transformers 5.24.

Structure (all four)::

    <Family>ForConditionalGeneration
      .model.vision_tower               CLIP vision model (SigLIP for OneVision)
      .model.multi_modal_projector      2-layer MLP projector
      .model.image_newline              learned (hidden,) vector (NeXT, NeXT-Video, OneVision)
      .model.vision_resampler           per-frame average pool (NeXT-Video only)
      .model.language_model.layers[i]   decoder layers (Llama / Mistral / Qwen2); ``.self_attn`` is the attention
      .lm_head

``set_attn_implementation({"text_config": ...})`` reaches exactly the decoder's attention modules (the vision tower
keeps its own); a bare string switches the vision tower too.

**Token layout.** The processor expands each ``<image>`` / ``<video>`` into as many placeholder ids as the item has
features; the model ``masked_scatter``-s *all* image features (images in batch order) into the image-token positions
in row-major order, and likewise the video features into the video-token positions. The adapter mirrors exactly
that: it computes every item's feature count from the processor outputs and the config (for anyres images by
running the model's own ``pack_image_features`` on 1-channel dummy features) and cuts the placeholder positions
in row-major order. So two images written back to back (``<image><image>``, which is what OneVision's real chat
template renders for a multi-image turn) are two spans, not one run. Each item is one contiguous span of its
placeholder id; an item whose tokens are not contiguous (Pixtral-style ``[IMG_BREAK]`` rows) raises ``ValueError``.

Structure tokens carrying the learned ``image_newline`` embedding sit *inside* the placeholder run (they are
placeholder ids, so in ``visual_mask``); :meth:`LlavaAdapter.image_newline_mask` marks them:

- LLaVA-1.5 images: ``(H/p)·(W/p)`` patch tokens (the CLS token dropped, strategy ``"default"``), no newlines.
- LLaVA-NeXT / NeXT-Video / OneVision single images (anyres): the base-resolution tile's ``g²`` tokens, then the
  unpadded high-resolution grid row by row, each row followed by one ``image_newline`` token (OneVision first
  bilinearly downsizes the grid when it exceeds ``anyres_max_9``). All of it is one ``"image"`` span.
- OneVision images in a multi-image row (``batch_num_images > 1``): no tiling, ``g²`` tokens then one newline.
- LLaVA-NeXT-Video videos: ``frames × (g / spatial_pool_stride)²`` tokens, frame-major, no separators; frame ``f``'s
  span is exactly frame ``f``'s pooled tokens.
- LLaVA-OneVision videos: ``frames × ceil(g / 2)²`` tokens frame-major, then **one** trailing ``image_newline`` for
  the whole video (``get_video_features`` appends it after the last frame). That token is visual (in
  ``visual_mask`` and :meth:`~LlavaAdapter.image_newline_mask`) but belongs to **no** frame span, so frame spans
  stay equal-sized and hold only their own frame's features; a component that drops a whole video must drop it too.

All videos of one batch have the same frame count (the video processors stack ``pixel_values_videos`` into one
``(videos, frames, 3, H, W)`` tensor; differing counts fail in the processor). Images and videos are numbered
separately within a row (``Span.item``).

**Positions** are plain 1-D RoPE: ``generate`` feeds the decoder ``attention_mask.cumsum(-1) - 1`` with padding at
0, which the base class's :meth:`~ModelAdapter.position_ids` reproduces exactly. Pitfall: a plain ``model(**inputs)``
call without ``position_ids`` uses ``arange(seq_len)`` for every row and ignores left padding, so pass
``position_ids=adapter.position_ids(**inputs)`` to a manual prefill.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from .base import ModelAdapter, Span, TokenLayout, spans_from_mask, split_into_frames


def _cut(mask: torch.Tensor, counts: list[int], what: str) -> Iterator[tuple[int, int, int, int]]:
    """Give each item ``counts[i]`` consecutive ``True`` positions of ``mask`` in row-major order, as the model's
    ``masked_scatter`` does; yield ``(row, start, end, item_within_row)``."""
    rows, cols = (t.tolist() for t in mask.nonzero(as_tuple=True))
    if sum(counts) != len(rows):
        raise ValueError(f"{len(rows)} {what} tokens in input_ids but the {what}s have {sum(counts)} features "
                         f"({counts}); were input_ids made by this model's processor?")
    cursor, per_row = 0, {}
    for count in counts:
        row, start, last = rows[cursor], cols[cursor], cols[cursor + count - 1]
        if rows[cursor + count - 1] != row or last - start + 1 != count:
            raise ValueError(f"the {count} tokens of a {what} in row {row} are not contiguous (from position "
                             f"{start}); interleaved structure tokens are not supported")
        item = per_row.get(row, 0)
        per_row[row] = item + 1
        yield row, start, last + 1, item
        cursor += count


class LlavaAdapter(ModelAdapter):
    """Adapter for ``LlavaForConditionalGeneration`` (LLaVA-1.5): one span of ``<image>`` tokens per image, every
    image with the same count (``(H/p)·(W/p)``, plus the CLS token under strategy ``"full"``)."""

    model_types: ClassVar[tuple[str, ...]] = ("llava",)
    modalities: ClassVar[tuple[str, ...]] = ("image",)
    #: Processor outputs that ``get_image_features`` takes besides ``pixel_values``.
    image_feature_keys: ClassVar[tuple[str, ...]] = ("image_sizes",)

    @property
    def vision_encoder(self) -> nn.Module:
        """The vision tower ``model.model.vision_tower`` (the projector is ``model.model.multi_modal_projector``)."""
        return self.model.model.vision_tower

    @property
    def projector(self) -> nn.Module:
        """The multimodal projector ``model.model.multi_modal_projector`` (vision features → LM hidden size)."""
        return self.model.model.multi_modal_projector

    # -- per-item feature counts ----------------------------------------------------------------------------------
    def image_features_layout(self, **inputs: Any) -> list[torch.Tensor] | None:
        """One bool vector per image (batch order), as long as the image's features, ``True`` where the feature
        is the learned ``image_newline``; ``None`` when ``inputs`` holds no ``pixel_values``."""
        pixel_values = inputs.get("pixel_values")
        if pixel_values is None:
            return None
        vision = self.model.config.vision_config
        if inputs.get("image_sizes") is not None:  # Pixtral-style tower: one token per patch of each image
            patch = vision.patch_size
            counts = [(h // patch) * (w // patch) for h, w in inputs["image_sizes"].tolist()]
        else:
            height, width = pixel_values.shape[-2:]
            tokens = (height // vision.patch_size) * (width // vision.patch_size)
            tokens += int(any(getattr(m, "class_embedding", None) is not None for m in self.vision_encoder.modules()))
            if self.model.config.vision_feature_select_strategy == "default":
                tokens -= 1
            counts = [tokens] * pixel_values.shape[0]
        return [torch.zeros(n, dtype=torch.bool) for n in counts]

    def video_features_layout(self, **inputs: Any) -> tuple[int, int, int, int] | None:
        """``(videos, frames, tokens_per_frame, trailing_tokens)`` of the batch's videos, or ``None`` without
        ``pixel_values_videos`` (and for families without video)."""
        return None

    # -- sequences ------------------------------------------------------------------------------------------------
    def _placements(self, input_ids: torch.Tensor, **inputs: Any) -> Iterator[tuple[str, int, int, int, Any]]:
        """``(kind, row, start, end, detail)`` of every image and video: detail is the image's newline vector or
        the video's ``(frames, per_frame, trailing)``."""
        image_ids = input_ids == self._token_id("image_token_id")
        images = self.image_features_layout(**inputs)
        if images is None:  # no pixel values (e.g. already encoded): fall back to maximal runs
            for row in range(input_ids.shape[0]):
                for span in spans_from_mask(image_ids[row], "image"):
                    yield "image", row, span.start, span.end, None
        else:
            for (row, start, end, _), newline in zip(_cut(image_ids, [len(v) for v in images], "image"), images,
                                                     strict=True):
                yield "image", row, start, end, newline
        if "video" not in self.modalities:
            return
        video_ids = input_ids == self._token_id("video_token_id")
        if not video_ids.any():
            return
        videos = self.video_features_layout(**inputs)
        if videos is None:
            raise ValueError("video tokens in input_ids but no pixel_values_videos to count their frames")
        num_videos, frames, per_frame, trailing = videos
        for row, start, end, _ in _cut(video_ids, [frames * per_frame + trailing] * num_videos, "video"):
            yield "video", row, start, end, (frames, per_frame, trailing)

    def token_layout(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                     **inputs: Any) -> TokenLayout:
        """One ``"image"`` span per image and one ``"frame"`` span per video frame (see the module docstring).

        Counts come from the processor outputs (``pixel_values``, ``image_sizes``, ``batch_num_images``,
        ``pixel_values_videos.shape``) and the config; placeholders are assigned to items in row-major order, as
        the model does. Without ``pixel_values`` each maximal run of image tokens is taken as one image.
        """
        real = attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
        visual = input_ids == self._token_id("image_token_id")
        if "video" in self.modalities:
            visual = visual | (input_ids == self._token_id("video_token_id"))
        spans: list[list[Span]] = [[] for _ in range(input_ids.shape[0])]
        counters: dict[tuple[str, int], int] = {}
        for kind, row, start, end, detail in self._placements(input_ids, **inputs):
            item = counters.get((kind, row), 0)
            counters[(kind, row)] = item + 1
            if kind == "image":
                spans[row].append(Span("image", start, end, item=item))
            else:
                frames, _, trailing = detail
                spans[row].extend(split_into_frames(start, end - trailing, frames, item))
        for row_spans in spans:
            row_spans.sort(key=lambda s: s.start)
        return TokenLayout(visual_mask=visual & real, audio_mask=torch.zeros_like(visual), spans=spans)

    def image_newline_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                           **inputs: Any) -> torch.Tensor:
        """Bool ``(batch, seq_len)``: visual positions whose embedding is the learned ``image_newline`` vector
        (anyres row ends, OneVision's per-video trailing token) rather than image or frame content. All ``False``
        for LLaVA-1.5. Needs ``pixel_values`` when images are present."""
        out = torch.zeros_like(input_ids, dtype=torch.bool)
        for kind, row, start, end, detail in self._placements(input_ids, **inputs):
            if kind == "image":
                if detail is None:
                    raise ValueError("image_newline_mask needs pixel_values to place the newline tokens")
                out[row, start:end] = detail.to(out.device)
            elif detail[2]:
                out[row, end - detail[2]:end] = True
        if attention_mask is not None:
            out &= attention_mask.bool()
        return out

    def encode_vision(self, **inputs: Any) -> list[torch.Tensor]:
        """Vision tower + projector (+ anyres packing / frame pooling) alone, through the model's own
        ``get_image_features`` / ``get_video_features``: one ``(tokens, hidden)`` tensor per image, then one per
        video, in batch order. Token counts equal the image spans and, for a video, the sum of its frame spans
        (plus OneVision's trailing newline)."""
        inner = self.model.model
        out: list[torch.Tensor] = []
        with torch.no_grad():
            if inputs.get("pixel_values") is not None:
                extra = {k: inputs[k] for k in self.image_feature_keys if inputs.get(k) is not None}
                out.extend(inner.get_image_features(pixel_values=inputs["pixel_values"], **extra).pooler_output)
            if "video" in self.modalities and inputs.get("pixel_values_videos") is not None:
                features = inner.get_video_features(pixel_values_videos=inputs["pixel_values_videos"])
                out.extend(features.pooler_output)
        return out


class LlavaNextAdapter(LlavaAdapter):
    """Adapter for ``LlavaNextForConditionalGeneration``: anyres images (base tile, then the unpadded tile grid
    row by row with one ``image_newline`` per row); per-image counts depend on ``image_sizes``."""

    model_types: ClassVar[tuple[str, ...]] = ("llava_next",)

    def _tiles_per_image(self, sizes: list[list[int]], **inputs: Any) -> list[int]:
        """How many tiles (base + high-resolution) the model takes from each image's ``pixel_values``."""
        to_tiles = sys.modules[type(self.model.model).__module__].image_size_to_num_patches
        config = self.model.config
        return [to_tiles(image_size=size, grid_pinpoints=config.image_grid_pinpoints,
                         patch_size=config.vision_config.image_size) for size in sizes]

    def _pack(self, features: list[torch.Tensor], image_sizes: torch.Tensor, newline: torch.Tensor) -> list:
        return self.model.model.pack_image_features(
            features, image_sizes, vision_feature_select_strategy=self.model.config.vision_feature_select_strategy,
            image_newline=newline)[0]

    def image_features_layout(self, **inputs: Any) -> list[torch.Tensor] | None:
        """Per image, the newline flags of its packed features: computed by the model's own
        ``pack_image_features`` on 1-channel dummy features (0 = image content, 1 = ``image_newline``)."""
        if inputs.get("pixel_values") is None or inputs.get("image_sizes") is None:
            return None
        image_sizes = inputs["image_sizes"].detach().to("cpu", torch.long)
        vision = self.model.config.vision_config
        grid = vision.image_size // vision.patch_size
        tiles = self._tiles_per_image(image_sizes.tolist(), **inputs)
        dummy = [torch.zeros(n, grid * grid, 1) for n in tiles]
        packed = self._pack(dummy, image_sizes, torch.ones(1))
        return [p[:, 0] > 0.5 for p in packed]


class LlavaNextVideoAdapter(LlavaNextAdapter):
    """Adapter for ``LlavaNextVideoForConditionalGeneration``: anyres images as LLaVA-NeXT, and videos whose
    frames are average-pooled by ``spatial_pool_stride`` (no separators between frames)."""

    model_types: ClassVar[tuple[str, ...]] = ("llava_next_video",)
    modalities: ClassVar[tuple[str, ...]] = ("video", "image")

    def video_features_layout(self, **inputs: Any) -> tuple[int, int, int, int] | None:
        """``(videos, frames, (g // stride)², 0)`` with ``g`` the frame's patch grid side."""
        videos = inputs.get("pixel_values_videos")
        if videos is None:
            return None
        side = videos.shape[-1] // self.model.config.vision_config.patch_size
        pooled = side // self.model.config.spatial_pool_stride
        return int(videos.shape[0]), int(videos.shape[1]), pooled * pooled, 0


class LlavaOnevisionAdapter(LlavaNextAdapter):
    """Adapter for ``LlavaOnevisionForConditionalGeneration``: anyres images (capped at ``anyres_max_9``; images of a
    multi-image row are not tiled), and videos pooled to ``ceil(g / 2)²`` tokens a frame followed by one
    ``image_newline`` token per video that belongs to no frame span."""

    model_types: ClassVar[tuple[str, ...]] = ("llava_onevision",)
    modalities: ClassVar[tuple[str, ...]] = ("image", "video")
    image_feature_keys: ClassVar[tuple[str, ...]] = ("image_sizes", "batch_num_images")

    def _tiles_per_image(self, sizes: list[list[int]], **inputs: Any) -> list[int]:
        """As LLaVA-NeXT, except that images of a row holding several (``batch_num_images``) get one tile."""
        tiles = super()._tiles_per_image(sizes)
        per_row = inputs.get("batch_num_images")
        if per_row is None:  # the model then treats every image as a single image
            return tiles
        single = [int(n) == 1 for n in per_row.tolist() for _ in range(int(n))]
        return [t if s else 1 for t, s in zip(tiles, single, strict=True)]

    def _pack(self, features: list[torch.Tensor], image_sizes: torch.Tensor, newline: torch.Tensor) -> list:
        return self.model.model.pack_image_features(features, image_sizes, image_newline=newline,
                                                    vision_aspect_ratio=self.model.config.vision_aspect_ratio)[0]

    def video_features_layout(self, **inputs: Any) -> tuple[int, int, int, int] | None:
        """``(videos, frames, ceil(g / 2)², 1)``: bilinear pooling to half the grid, one trailing newline."""
        videos = inputs.get("pixel_values_videos")
        if videos is None:
            return None
        vision = self.model.config.vision_config
        pooled = -(-(vision.image_size // vision.patch_size) // 2)
        return int(videos.shape[0]), int(videos.shape[1]), pooled * pooled, 1
