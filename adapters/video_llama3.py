"""Adapter for VideoLLaMA3 (``video_llama_3``): dynamic-resolution images, videos with per-frame token compression.

Structure (transformers 5.24)::

    VideoLlama3ForConditionalGeneration
      .model.vision_model               vision encoder (2-D RoPE over patches, per-item merge sizes)
      .model.projector                  MLP projector
      .model.language_model.layers[i]   Qwen2 decoder layers; .self_attn is the attention module

Token layout.

- An image is one run of ``<|image_pad|>`` tokens: ``t * h * w / merge**2`` (images use merge size 1: one token per
  patch).
- A video's prompt is ``"Time 0.0s:" <frame 0 tokens> ",Time 1.0s:" <frame 1 tokens> ...``: every frame is its own
  run of ``<|video_pad|>`` tokens, separated by timestamp *text*. Frames are 2x2-merged, then **token compression**
  drops a frame's merged token when it barely differs from the previous frame's (``video_compression_mask`` from the
  processor), so frames have different token counts, and a frame that drops every token has no run and no span.
- Positions are plain 1-D RoPE (the base class's :meth:`position_ids`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from .base import ModelAdapter, Span, TokenLayout, spans_from_mask


class VideoLlama3Adapter(ModelAdapter):
    """Adapter for ``VideoLlama3ForConditionalGeneration``."""

    model_types: ClassVar[tuple[str, ...]] = ("video_llama_3",)
    modalities: ClassVar[tuple[str, ...]] = ("image", "video")

    @property
    def vision_encoder(self) -> nn.Module:
        """The vision encoder ``model.model.vision_model`` (the projector is ``model.model.projector``)."""
        return self.model.model.vision_model

    @staticmethod
    def frame_token_counts(video_grid_thw: torch.Tensor, video_merge_sizes: torch.Tensor,
                           video_compression_mask: torch.Tensor | None = None) -> list[list[int]]:
        """Tokens each frame of each video keeps in the prompt: ``counts[video][frame]``."""
        counts: list[list[int]] = []
        offset = 0
        for (frames, height, width), merge in zip(video_grid_thw.tolist(), video_merge_sizes.tolist(), strict=True):
            per_frame = height * width // merge**2
            if video_compression_mask is None:
                counts.append([per_frame] * frames)
            else:
                kept = video_compression_mask[offset:offset + frames * per_frame].view(frames, per_frame)
                counts.append([int(n) for n in kept.sum(-1).tolist()])
            offset += frames * per_frame
        return counts

    def token_layout(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                     **inputs: Any) -> TokenLayout:
        """One ``"image"`` span per image and one ``"frame"`` span per frame that kept at least one token.

        Images are cut from their runs by ``image_grid_thw``; frames are matched, in batch order, to the runs of video
        tokens using the per-frame counts of :meth:`frame_token_counts`. ``item`` numbers the videos (or images)
        within the row. Raises ``ValueError`` when the runs do not match the counts.
        """
        real = attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
        image = (input_ids == self._token_id("image_token_id")) & real
        video = (input_ids == self._token_id("video_token_id")) & real
        image_sizes: list[int] = []
        if inputs.get("image_grid_thw") is not None:
            merges = inputs["image_merge_sizes"].tolist()
            image_sizes = [t * h * w // m**2 for (t, h, w), m in zip(inputs["image_grid_thw"].tolist(), merges,
                                                                      strict=True)]
        frames: list[tuple[int, int, int]] = []  # (video index, frame index, tokens) of frames with tokens
        if inputs.get("video_grid_thw") is not None:
            counts = self.frame_token_counts(inputs["video_grid_thw"], inputs["video_merge_sizes"],
                                             inputs.get("video_compression_mask"))
            frames = [(v, f, n) for v, per_video in enumerate(counts) for f, n in enumerate(per_video) if n]
        image_queue, frame_queue = iter(image_sizes), iter(frames)
        spans: list[list[Span]] = []
        for row in range(input_ids.shape[0]):
            row_spans: list[Span] = []
            for run in spans_from_mask(image[row], "image"):
                start = run.start
                while start < run.end:
                    size = next(image_queue, run.end - start)
                    row_spans.append(Span("image", start, start + size, item=len(row_spans)))
                    start += size
            first_video = None
            for run in spans_from_mask(video[row], "video"):
                video_index, frame_index, size = next(frame_queue, (None, None, None))
                if size != run.length:
                    raise ValueError(f"row {row}: a run of {run.length} video tokens at {run.start} does not match "
                                     f"the next frame's token count ({size}) from video_compression_mask")
                first_video = video_index if first_video is None else first_video
                row_spans.append(Span("frame", run.start, run.end, item=video_index - first_video,
                                      frame=frame_index))
            spans.append(sorted(row_spans, key=lambda s: s.start))
        return TokenLayout(visual_mask=image | video, audio_mask=torch.zeros_like(image), spans=spans)

    def encode_vision(self, **inputs: Any) -> list[torch.Tensor]:
        """Vision encoder + projector alone: one tensor per image, then one per video holding the tokens that
        survive token compression (so counts equal the video's frame spans together)."""
        inner = self.model.model
        out: list[torch.Tensor] = []
        with torch.no_grad():
            if inputs.get("pixel_values") is not None:
                features = inner.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"],
                                                    inputs["image_merge_sizes"], return_dict=True)
                out.extend(features.pooler_output)
            if inputs.get("pixel_values_videos") is not None:
                features = inner.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"],
                                                    inputs["video_merge_sizes"], return_dict=True)
                keep = inputs.get("video_compression_mask")
                offset = 0
                for video in features.pooler_output:
                    count = video.shape[0]
                    if keep is not None:
                        video = video[keep[offset:offset + count].to(video.device)]
                    offset += count
                    out.append(video)
        return out
