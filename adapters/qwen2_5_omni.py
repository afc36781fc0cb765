"""Adapter for the Qwen2.5-Omni thinker (``qwen2_5_omni_thinker``): images, videos and audio, M-RoPE.

Structure (transformers 5.24)::

    Qwen2_5OmniThinkerForConditionalGeneration
      .model.visual                     vision tower (Qwen2.5-VL style: window attention, merger = projector)
      .model.audio_tower                Whisper-style audio encoder (with its own projection)
      .model.language_model.layers[i]   decoder layers; .self_attn is the attention module

Token layout: images and videos as in Qwen2.5-VL (``<|IMAGE|>`` / ``<|VIDEO|>`` runs between ``<|vision_bos|>`` and
``<|vision_eos|>``; a "frame" span is one temporal group of ``temporal_patch_size`` frames); each audio clip is one
run of ``<|AUDIO|>`` tokens between ``<|audio_bos|>`` and ``<|audio_eos|>``, ``((n - 1) // 2 + 1 - 2) // 2 + 1``
tokens for ``n`` mel frames (40 ms of audio per token). The config spells the ids ``*_token_index``.

Not covered: ``load_audio_from_video`` (``use_audio_in_video``) prompts, where a video's tokens are cut into
``seconds_per_chunk`` chunks interleaved with its audio; :meth:`token_layout` raises on them rather than guessing.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from .base import Span, TokenLayout, spans_from_mask
from .qwen2_vl import Qwen2_5_VLAdapter


def audio_token_counts(feature_attention_mask: torch.Tensor) -> list[int]:
    """Audio tokens of each clip from its mel-frame mask (the audio tower's two stride-2 reductions)."""
    frames = feature_attention_mask.sum(-1)
    return [int(n) for n in (((frames - 1) // 2 + 1 - 2) // 2 + 1).tolist()]


class Qwen2_5OmniThinkerAdapter(Qwen2_5_VLAdapter):
    """Adapter for ``Qwen2_5OmniThinkerForConditionalGeneration``."""

    model_types: ClassVar[tuple[str, ...]] = ("qwen2_5_omni_thinker",)
    modalities: ClassVar[tuple[str, ...]] = ("image", "video", "audio")

    @property
    def audio_encoder(self) -> nn.Module:
        """The audio tower ``model.model.audio_tower``."""
        return self.model.model.audio_tower

    def token_layout(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                     **inputs: Any) -> TokenLayout:
        """Image and frame spans as for Qwen2.5-VL, plus one ``"audio"`` span per audio clip."""
        if inputs.get("use_audio_in_video") or inputs.get("load_audio_from_video"):
            raise ValueError("token_layout does not support use_audio_in_video prompts (interleaved audio/video)")
        layout = super().token_layout(input_ids, attention_mask, **inputs)
        audio = input_ids == self._token_id("audio_token_id")
        if attention_mask is not None:
            audio &= attention_mask.bool()
        sizes = iter(audio_token_counts(inputs["feature_attention_mask"])) \
            if inputs.get("feature_attention_mask") is not None else None
        for row in range(input_ids.shape[0]):
            clips: list[Span] = []
            for run in spans_from_mask(audio[row], "audio"):
                for start, end in self._cut_run(run, sizes, "audio"):
                    clips.append(Span("audio", start, end, item=len(clips)))
            layout.spans[row] = sorted(layout.spans[row] + clips, key=lambda s: s.start)
        if sizes is not None:
            self._check_all_consumed(sizes, "audio")
        layout.audio_mask = audio
        return layout

    def position_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                     **inputs: Any) -> torch.Tensor:
        """``(4, batch, seq_len)``: the 1-D text row, then the t/h/w M-RoPE rows of the thinker's
        ``get_rope_index`` (audio tokens advance the temporal position like text). Matches what ``generate``
        hands the language model at prefill."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        text = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
        feature_mask = inputs.get("feature_attention_mask")
        vision, _ = self.model.model.get_rope_index(
            input_ids,
            image_grid_thw=inputs.get("image_grid_thw"),
            video_grid_thw=inputs.get("video_grid_thw"),
            attention_mask=attention_mask,
            use_audio_in_video=False,
            audio_seqlens=feature_mask.sum(-1) if feature_mask is not None else None,
            second_per_grids=inputs.get("video_second_per_grid"),
        )
        return torch.cat([text.unsqueeze(0).to(vision.dtype), vision], dim=0)

    def encode_audio(self, **inputs: Any) -> list[torch.Tensor]:
        """The audio tower alone: one ``(tokens, hidden)`` tensor per clip, counts equal to the audio spans."""
        with torch.no_grad():
            features = self.model.model.get_audio_features(inputs["input_features"],
                                                           feature_attention_mask=inputs["feature_attention_mask"])
        return list(torch.split(features.last_hidden_state, audio_token_counts(inputs["feature_attention_mask"])))
