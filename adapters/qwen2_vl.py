"""Adapters for Qwen2-VL (``qwen2_vl``) and Qwen2.5-VL (``qwen2_5_vl``): dynamic resolution, M-RoPE, image + video.

Structure (both families, transformers 5.24)::

    Qwen2VLForConditionalGeneration / Qwen2_5_VLForConditionalGeneration
      .model.visual                     vision tower; the projector (2x2 patch merger + MLP) is .model.visual.merger
      .model.language_model.layers[i]   decoder layers, .self_attn is the attention module
      .model.rope_deltas                module state, see below
      .lm_head

Token layout. The processor expands each ``<|image_pad|>`` / ``<|video_pad|>`` of the prompt into
``t * h * w / merge_size**2`` copies (``image_grid_thw`` / ``video_grid_thw`` rows, in patches). The structure tokens
``<|vision_start|>`` and ``<|vision_end|>`` sit *outside* the run and are text tokens (``mm_token_type_ids`` 0,
1-D positions); only the pad tokens are replaced by vision features. Inside a run, tokens are ordered temporal-group
major, then merged rows, then merged columns (the merger's 2x2 blocks are already folded into one token each).

Video "frames". Qwen merges ``temporal_patch_size`` (2 for all released checkpoints) consecutive input frames into
one temporal token group by the 3-D patch embedding (an odd frame count is padded by repeating the last frame). A
``Span("frame", ..., frame=f)`` of this adapter is one temporal group ``f``: it covers input frames
``[f * temporal_patch_size, (f + 1) * temporal_patch_size)`` of the (padded) clip, and
``video_grid_thw[v, 0]`` spans of ``h * w / merge_size**2`` tokens each make up video ``v``. See
:attr:`Qwen2VLAdapter.frames_per_span`.

Position ids. See :meth:`Qwen2VLAdapter.position_ids`: a ``(4, batch, seq_len)`` tensor, row 0 the 1-D text
positions (what the decoder layers and the attention function receive as ``position_ids``), rows 1..3 the
temporal / height / width M-RoPE positions (what the rotary embedding turns into cos / sin).

``rope_deltas`` state. ``model.model.rope_deltas`` (shape ``(batch, 1)``: max M-RoPE position + 1 - real length) is
written by ``generate`` at prefill (``_prepare_position_ids_for_generation``) and by any forward called with
``position_ids=None`` on an empty cache; it is *read* only by a forward called with ``position_ids=None`` and a
non-empty cache or with ``inputs_embeds`` only (then positions = text positions + ``rope_deltas``), and by
``generate`` when it continues from a non-empty cache without new visual tokens. ``generate``'s own decode steps
carry explicit 4-row ``position_ids`` (last + 1 on every row) and never read it. The adapter's methods never read or
write it; components that run their own decode loop should pass explicit ``position_ids`` or call
:meth:`Qwen2VLAdapter.reset_rope_deltas` first, since a stale value from an earlier batch is silently broadcast
(``repeat_interleave`` by ``batch // rope_deltas.shape[0]``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from .base import ModelAdapter, Span, TokenLayout, spans_from_mask, split_into_frames


class Qwen2VLAdapter(ModelAdapter):
    """Adapter for ``Qwen2VLForConditionalGeneration`` (``model_type == "qwen2_vl"``).

    Pitfalls:

    - A plain ``model(**inputs)`` forward (no ``generate``) hands the language model 3-row M-RoPE ids
      ``(3, B, L)`` and the decoder layers ``position_ids=None``; ``generate`` hands it 4 rows and the layers the
      text row. Cos / sin are the same both ways; attention functions must accept ``position_ids=None``.
    - Without ``mm_token_type_ids`` (the processor always returns it) transformers 5.24 silently falls back to
      1-D positions on all rows; :meth:`position_ids` mirrors that.
    - Images and videos are consumed in row-major order across the batch, matching ``image_grid_thw`` /
      ``video_grid_thw`` row order (what ``masked_scatter`` and ``get_rope_index`` do).
    """

    model_types: ClassVar[tuple[str, ...]] = ("qwen2_vl",)
    text_config_key: ClassVar[str] = "text_config"
    modalities: ClassVar[tuple[str, ...]] = ("image", "video")
    multimodal_rope: ClassVar[bool] = True

    # -- structure ----------------------------------------------------------------------------------------------
    @property
    def vision_encoder(self) -> nn.Module:
        """The vision tower ``model.model.visual``; note that it contains the projector as ``.merger``."""
        return self.model.model.visual

    @property
    def projector(self) -> nn.Module:
        """The patch merger (2x2 spatial merge + MLP into the language model's hidden size)."""
        return self.model.model.visual.merger

    @property
    def spatial_merge_size(self) -> int:
        """Patches merged per side into one language-model token (2 in released checkpoints)."""
        return int(self.model.config.vision_config.spatial_merge_size)

    @property
    def frames_per_span(self) -> int:
        """Input video frames covered by one ``"frame"`` span: the vision tower's ``temporal_patch_size``."""
        return int(self.model.config.vision_config.temporal_patch_size)

    # -- sequences ----------------------------------------------------------------------------------------------
    def _tokens_per_item(self, grid_thw: torch.Tensor | None) -> list[int]:
        if grid_thw is None:
            return []
        return [int(n) for n in (grid_thw.prod(-1) // self.spatial_merge_size**2).tolist()]

    def token_layout(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                     image_grid_thw: torch.Tensor | None = None, video_grid_thw: torch.Tensor | None = None,
                     **inputs: Any) -> TokenLayout:
        """Spans of every image (``"image"``) and of every temporal token group of every video (``"frame"``).

        Items are found from the ``<|image_pad|>`` / ``<|video_pad|>`` ids and cut by the per-item token counts of
        ``image_grid_thw`` / ``video_grid_thw`` (consumed in row-major order), so adjacent items without text between
        them are still told apart. Without a grid, each maximal run is one item (and a video one single frame span).
        ``item`` numbers images and videos separately within the row. Raises ``ValueError`` when the token runs do
        not match the grids.
        """
        image_mask = input_ids == self._token_id("image_token_id")
        video_mask = input_ids == self._token_id("video_token_id")
        if attention_mask is not None:
            real = attention_mask.bool()
            image_mask &= real
            video_mask &= real
        image_counts = iter(self._tokens_per_item(image_grid_thw))
        video_counts = self._tokens_per_item(video_grid_thw)
        video_groups = [] if video_grid_thw is None else [int(t) for t in video_grid_thw[:, 0].tolist()]
        video_iter = iter(zip(video_counts, video_groups, strict=True))
        spans: list[list[Span]] = []
        for row in range(input_ids.shape[0]):
            row_spans: list[Span] = []
            for run in spans_from_mask(image_mask[row], "image"):
                for start, end in self._cut_run(run, image_counts if image_grid_thw is not None else None, "image"):
                    row_spans.append(Span("image", start, end, item=len(row_spans)))
            videos: list[Span] = []
            num_videos = 0
            for run in spans_from_mask(video_mask[row], "video"):
                counts = None
                groups: list[int] = []
                if video_grid_thw is not None:
                    counts, groups = self._video_counts(run, video_iter)
                for k, (start, end) in enumerate(self._cut_run(run, counts, "video")):
                    num_groups = groups[k] if groups else 1
                    videos.extend(split_into_frames(start, end, num_groups, num_videos))
                    num_videos += 1
            row_spans = sorted(row_spans + videos, key=lambda s: s.start)
            spans.append(row_spans)
        self._check_all_consumed(image_counts, "image")
        self._check_all_consumed(video_iter, "video")
        return TokenLayout(
            visual_mask=image_mask | video_mask,
            audio_mask=torch.zeros_like(image_mask),
            spans=spans,
        )

    @staticmethod
    def _cut_run(run: Span, counts: Any, kind: str) -> list[tuple[int, int]]:
        """Cut one run of placeholder tokens into consecutive items whose sizes come from ``counts``."""
        if counts is None:
            return [(run.start, run.end)]
        pieces = []
        start = run.start
        while start < run.end:
            size = next(counts, None)
            if size is None or start + size > run.end:
                raise ValueError(
                    f"{kind} tokens at [{run.start}, {run.end}) do not match the {kind} grid sizes "
                    f"(next item: {size} tokens at {start})"
                )
            pieces.append((start, start + size))
            start += size
        return pieces

    @staticmethod
    def _video_counts(run: Span, video_iter: Any) -> tuple[Any, list[int]]:
        """Take from ``video_iter`` the videos that fill ``run`` exactly; returns (token-count iterator, groups)."""
        sizes, groups = [], []
        filled = 0
        while filled < run.length:
            item = next(video_iter, None)
            if item is None:
                break
            sizes.append(item[0])
            groups.append(item[1])
            filled += item[0]
        return iter(sizes), groups

    @staticmethod
    def _check_all_consumed(counts: Any, kind: str) -> None:
        if next(counts, None) is not None:
            raise ValueError(f"the {kind} grid lists more {kind}s than the input ids hold")

    def position_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                     **inputs: Any) -> torch.Tensor:
        """The ``(4, batch, seq_len)`` position ids the language model receives at prefill under ``generate``.

        Row 0: 1-D text positions (``attention_mask.cumsum - 1``, padding 0), which the decoder layers and the
        attention function receive as ``position_ids`` and the causal mask is built from. Rows 1..3: the temporal,
        height and width M-RoPE positions of ``model.model.get_rope_index`` (padding 0), from which the rotary
        embedding builds cos / sin. Text tokens have equal t/h/w positions; a visual item starting at M-RoPE
        position ``p`` gets ``p + int(group * interval)``, ``p + row``, ``p + col`` (merged-token grid), and the text
        after it resumes at ``p + max(h, w) / merge_size`` whatever the number of temporal groups (transformers
        5.24), so rows 1..3 usually run behind row 0 (``rope_deltas`` < 0) and a long video's temporal positions can
        exceed those of the text that follows it. ``interval`` is 1 for Qwen2-VL and for images;
        ``tokens_per_second * second_per_grid_ts`` for Qwen2.5-VL videos.

        ``inputs`` needs ``mm_token_type_ids`` and ``image_grid_thw`` / ``video_grid_thw`` (and, for Qwen2.5-VL
        video, ``second_per_grid_ts``) from the processor; without ``mm_token_type_ids`` or a grid, every row is the
        text row, as in transformers 5.24. Reads and writes no module state (``rope_deltas`` is left alone).
        """
        if attention_mask is not None:
            text = attention_mask.long().cumsum(-1) - 1
            text = text.masked_fill(attention_mask == 0, 0)
        else:
            text = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0).expand(input_ids.shape[0], -1)
        mm_token_type_ids = inputs.get("mm_token_type_ids")
        image_grid_thw = inputs.get("image_grid_thw")
        video_grid_thw = inputs.get("video_grid_thw")
        if mm_token_type_ids is not None and (image_grid_thw is not None or video_grid_thw is not None):
            vision, _ = self.model.model.get_rope_index(
                input_ids,
                mm_token_type_ids=mm_token_type_ids,
                image_grid_thw=image_grid_thw,
                video_grid_thw=video_grid_thw,
                second_per_grid_ts=inputs.get("second_per_grid_ts"),
                attention_mask=attention_mask,
            )
        else:
            vision = text.unsqueeze(0).expand(3, -1, -1)
        return torch.cat([text.unsqueeze(0).to(vision.dtype), vision], dim=0)

    def rope_deltas(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                    **inputs: Any) -> torch.Tensor:
        """``(batch, 1)`` offsets with M-RoPE decode position = text position + delta (what ``generate`` stores).

        Equals ``max(M-RoPE position of the row) + 1 - real length``; zeros without visual inputs.
        """
        positions = self.position_ids(input_ids, attention_mask, **inputs)
        real_len = attention_mask.long().sum(-1) if attention_mask is not None else torch.full(
            (input_ids.shape[0],), input_ids.shape[1], device=input_ids.device)
        return (positions[1:].amax(dim=(0, 2)) + 1 - real_len).unsqueeze(1)

    def reset_rope_deltas(self) -> None:
        """Forget the ``rope_deltas`` the model cached at the last prefill (``model.model.rope_deltas = None``)."""
        self.model.model.rope_deltas = None

    def encode_vision(self, **inputs: Any) -> list[torch.Tensor]:
        """Vision tower + merger alone: one ``(tokens, hidden)`` tensor per image, then one per video.

        Order: all images in ``image_grid_thw`` order, then all videos in ``video_grid_thw`` order (both row-major
        over the batch). A video's tokens are its temporal groups concatenated, matching its ``"frame"`` spans.
        Runs under ``torch.no_grad``.
        """
        out: list[torch.Tensor] = []
        inner = self.model.model
        with torch.no_grad():
            if inputs.get("pixel_values") is not None:
                features = inner.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"], return_dict=True)
                out.extend(features.pooler_output)
            if inputs.get("pixel_values_videos") is not None:
                features = inner.get_video_features(
                    inputs["pixel_values_videos"], inputs["video_grid_thw"], return_dict=True
                )
                out.extend(features.pooler_output)
        return out


class Qwen2_5_VLAdapter(Qwen2VLAdapter):
    """Adapter for ``Qwen2_5_VLForConditionalGeneration`` (``model_type == "qwen2_5_vl"``).

    Same layout as Qwen2-VL. Differences that matter to components:

    - The vision tower uses window attention (blocks not in ``fullatt_block_indexes`` attend within windows of
      ``window_size / patch_size / merge_size`` merged tokens per side); it permutes tokens into window order
      internally and un-permutes after the merger, so ``encode_vision`` output is in the usual raster order.
    - Video temporal M-RoPE positions are spaced by ``tokens_per_second * second_per_grid_ts`` (from the processor,
      ``temporal_patch_size / fps``; without video metadata the processor assumes 24 fps), so video position ids
      are not contiguous and the temporal row of a video can exceed the text position that follows it.
    """

    model_types: ClassVar[tuple[str, ...]] = ("qwen2_5_vl",)
