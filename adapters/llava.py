"""Adapters for the LLaVA family: LLaVA-1.5 (``llava``), LLaVA-NeXT (``llava_next``), LLaVA-NeXT-Video
(``llava_next_video``) and LLaVA-OneVision (``llava_onevision``).

Structure (all four, transformers 5.24)::

    <Family>ForConditionalGeneration
      .model.vision_tower               CLIP (SigLIP for OneVision) vision model
      .model.multi_modal_projector      MLP projector
      .model.language_model.layers[i]   decoder layers; .self_attn is the attention module
      .lm_head

Token layout. The processor expands each ``<image>`` / ``<video>`` placeholder into as many copies as the item has
features, and the model scatters the features into exactly those positions: every image or video is one contiguous
run of its placeholder id. Structure tokens that carry features are *inside* the run:

- LLaVA-NeXT / NeXT-Video / OneVision images (anyres): the base-resolution tokens, then the high-resolution tiles
  row by row with one ``image_newline`` feature at the end of each row — all are image tokens of the span.
- LLaVA-NeXT-Video videos: ``frames × (grid / spatial_pool_stride)²`` tokens, frame-major, no separators.
- LLaVA-OneVision videos: ``frames × ceil(grid / 2)²`` tokens frame-major, then **one** trailing ``image_newline``
  token for the whole video. That token is visual (in ``visual_mask``) but belongs to no frame span.

Positions are plain 1-D RoPE (``attention_mask.cumsum - 1``): the base class's :meth:`position_ids` is exact.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from .base import ModelAdapter, Span, TokenLayout, spans_from_mask, split_into_frames


class LlavaAdapter(ModelAdapter):
    """Adapter for ``LlavaForConditionalGeneration`` (LLaVA-1.5): one run of ``<image>`` tokens per image."""

    model_types: ClassVar[tuple[str, ...]] = ("llava",)
    modalities: ClassVar[tuple[str, ...]] = ("image",)
    #: Feature tokens after each video's frames that belong to no frame (OneVision's trailing newline).
    video_trailing_tokens: ClassVar[int] = 0

    @property
    def vision_encoder(self) -> nn.Module:
        """The vision tower ``model.model.vision_tower`` (the projector is ``model.model.multi_modal_projector``)."""
        return self.model.model.vision_tower

    def _masks(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        real = attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
        image = (input_ids == self._token_id("image_token_id")) & real
        if "video" in self.modalities:
            video = (input_ids == self._token_id("video_token_id")) & real
        else:
            video = torch.zeros_like(image)
        return image, video

    def token_layout(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                     **inputs: Any) -> TokenLayout:
        """One ``"image"`` span per run of image tokens and, for video families, one ``"frame"`` span per frame.

        The frame count of every video is ``pixel_values_videos.shape[1]`` (the LLaVA video processors stack a
        batch's videos, so all have the same count); videos are numbered within their row.
        """
        image, video = self._masks(input_ids, attention_mask)
        videos = inputs.get("pixel_values_videos")
        spans: list[list[Span]] = []
        for row in range(input_ids.shape[0]):
            row_spans = spans_from_mask(image[row], "image")
            for index, run in enumerate(spans_from_mask(video[row], "video")):
                if videos is None:
                    raise ValueError("video tokens in input_ids but no pixel_values_videos to count their frames")
                end = run.end - self.video_trailing_tokens
                row_spans.extend(split_into_frames(run.start, end, int(videos.shape[1]), index))
            spans.append(sorted(row_spans, key=lambda s: s.start))
        return TokenLayout(visual_mask=image | video, audio_mask=torch.zeros_like(image), spans=spans)

    def encode_vision(self, **inputs: Any) -> list[torch.Tensor]:
        """Vision tower + projector alone: one ``(tokens, hidden)`` tensor per image, then one per video, in batch
        order. Token counts equal the spans' (for OneVision videos: frames + the trailing newline)."""
        inner = self.model.model
        out: list[torch.Tensor] = []
        with torch.no_grad():
            if inputs.get("pixel_values") is not None:
                extra = {"image_sizes": inputs["image_sizes"]} if inputs.get("image_sizes") is not None else {}
                features = inner.get_image_features(pixel_values=inputs["pixel_values"], **extra)
                out.extend(features.pooler_output)
            if inputs.get("pixel_values_videos") is not None:
                features = inner.get_video_features(pixel_values_videos=inputs["pixel_values_videos"])
                out.extend(features.pooler_output)
        return out


class LlavaNextAdapter(LlavaAdapter):
    """Adapter for ``LlavaNextForConditionalGeneration``: anyres images (base tokens, tiles, row newlines)."""

    model_types: ClassVar[tuple[str, ...]] = ("llava_next",)


class LlavaNextVideoAdapter(LlavaAdapter):
    """Adapter for ``LlavaNextVideoForConditionalGeneration``: anyres images and pooled video frames."""

    model_types: ClassVar[tuple[str, ...]] = ("llava_next_video",)
    modalities: ClassVar[tuple[str, ...]] = ("video", "image")


class LlavaOnevisionAdapter(LlavaAdapter):
    """Adapter for ``LlavaOnevisionForConditionalGeneration``: anyres images; pooled video frames followed by one
    ``image_newline`` token per video that belongs to no frame."""

    model_types: ClassVar[tuple[str, ...]] = ("llava_onevision",)
    modalities: ClassVar[tuple[str, ...]] = ("image", "video")
    video_trailing_tokens: ClassVar[int] = 1
