"""The adapter protocol: everything mmaccel needs to know about one model family, and nothing else.

Components never test ``model_type``; they ask the model's adapter. An adapter answers:

- where the language model, its decoder layers and their attention modules are;
- which sequence positions hold visual tokens (per image, per video frame) and audio tokens;
- how the language model's position ids are computed (1-D for LLaVA-style models, M-RoPE for Qwen);
- how to run the vision encoder alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn


@dataclass(frozen=True)
class Span:
    """A half-open range ``[start, end)`` of sequence positions holding one item's tokens.

    ``kind`` is ``"image"``, ``"frame"`` or ``"audio"``; ``item`` numbers the image / video / audio clip within the
    row (0-based, in order of appearance); ``frame`` numbers the frame within its video (``None`` otherwise).
    """

    kind: str
    start: int
    end: int
    item: int
    frame: int | None = None

    @property
    def length(self) -> int:
        """Number of tokens in the span."""
        return self.end - self.start


@dataclass
class TokenLayout:
    """Where the non-text tokens of a batch sit, as the language model sees the sequence.

    ``visual_mask`` and ``audio_mask`` are boolean ``(batch, seq_len)`` tensors; ``spans[b]`` lists the spans of
    row ``b`` in sequence order. Padding is never part of a span.
    """

    visual_mask: torch.Tensor
    audio_mask: torch.Tensor
    spans: list[list[Span]] = field(default_factory=list)

    def images(self, row: int = 0) -> list[Span]:
        """Spans of whole images in ``row``."""
        return [s for s in self.spans[row] if s.kind == "image"]

    def frames(self, row: int = 0) -> list[Span]:
        """Spans of single video frames in ``row`` (all videos, in order)."""
        return [s for s in self.spans[row] if s.kind == "frame"]

    def audio(self, row: int = 0) -> list[Span]:
        """Spans of audio clips in ``row``."""
        return [s for s in self.spans[row] if s.kind == "audio"]

    @property
    def num_visual_tokens(self) -> torch.Tensor:
        """Visual tokens per row, shape ``(batch,)``."""
        return self.visual_mask.sum(dim=-1)


def spans_from_mask(mask_row: torch.Tensor, kind: str) -> list[Span]:
    """Split one boolean row into maximal runs of ``True``; each run is one item of ``kind``."""
    spans: list[Span] = []
    values = mask_row.to(torch.int8).tolist()
    start = None
    for pos, value in enumerate(values + [0]):
        if value and start is None:
            start = pos
        elif not value and start is not None:
            spans.append(Span(kind, start, pos, item=len(spans)))
            start = None
    return spans


def split_into_frames(span_start: int, span_end: int, num_frames: int, video_index: int) -> list[Span]:
    """Cut one video's contiguous token run into ``num_frames`` equal frame spans.

    Raises ``ValueError`` when the run does not divide evenly, which means the adapter's token count is wrong.
    """
    length = span_end - span_start
    if num_frames <= 0 or length % num_frames:
        raise ValueError(
            f"video {video_index}: {length} tokens cannot be split into {num_frames} equal frames"
        )
    per_frame = length // num_frames
    return [
        Span("frame", span_start + f * per_frame, span_start + (f + 1) * per_frame, item=video_index, frame=f)
        for f in range(num_frames)
    ]


class ModelAdapter:
    """Base class of the per-family adapters; one instance wraps one model instance.

    Subclasses set ``model_types`` (the ``config.model_type`` values they serve) and implement
    :meth:`token_layout`, :meth:`encode_vision`, and, where the family is not plain 1-D RoPE, :meth:`position_ids`.
    """

    model_types: ClassVar[tuple[str, ...]] = ()
    #: Name of the sub-config that holds the language model (the key for ``set_attn_implementation``).
    text_config_key: ClassVar[str] = "text_config"
    #: Which modalities this family accepts, for error messages and tests.
    modalities: ClassVar[tuple[str, ...]] = ("image",)
    #: Whether the language model takes multimodal RoPE ids (``(4, B, L)``, built by the model itself from the
    #: media grid) rather than 1-D positions.
    multimodal_rope: ClassVar[bool] = False

    def __init__(self, model: nn.Module):
        self.model = model

    # -- structure ----------------------------------------------------------------------------------------------
    @property
    def text_config(self) -> Any:
        """The language model's config."""
        return getattr(self.model.config, self.text_config_key)

    @property
    def language_model(self) -> nn.Module:
        """The decoder stack (the module that owns ``layers``)."""
        return self.model.model.language_model

    @property
    def decoder_layers(self) -> nn.ModuleList:
        """The language model's decoder layers, in order."""
        return self.language_model.layers

    @property
    def attention_modules(self) -> list[nn.Module]:
        """The self-attention module of every decoder layer, in layer order."""
        return [layer.self_attn for layer in self.decoder_layers]

    @property
    def vision_encoder(self) -> nn.Module | None:
        """The vision tower (without the projector), or ``None`` for a family without one."""
        return None

    # -- sequences ----------------------------------------------------------------------------------------------
    def token_layout(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                     **inputs: Any) -> TokenLayout:
        """Locate the visual and audio tokens of a processed batch (``inputs`` = the rest of the processor output)."""
        raise NotImplementedError

    def visual_token_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Boolean ``(batch, seq_len)``: the placeholder positions of images and video frames, from the token ids
        alone (no processor outputs needed, so it also works on the inputs generate passes to the model, where the
        media are already encoded)."""
        mask = torch.zeros_like(input_ids, dtype=torch.bool)
        for name in ("image_token_id", "video_token_id"):
            try:
                mask |= input_ids == self._token_id(name)
            except ValueError:  # a family without this modality
                continue
        return mask

    def audio_token_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Boolean ``(batch, seq_len)``: the audio placeholder positions (none for a family without audio)."""
        try:
            return input_ids == self._token_id("audio_token_id")
        except ValueError:
            return torch.zeros_like(input_ids, dtype=torch.bool)

    def media_token_ids(self) -> set[int]:
        """The ids of the family's image, video and audio placeholder tokens (those it has)."""
        ids = set()
        for name in ("image_token_id", "video_token_id", "audio_token_id"):
            try:
                ids.add(self._token_id(name))
            except ValueError:  # a family without this modality
                continue
        return ids

    def position_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                     **inputs: Any) -> torch.Tensor:
        """Position ids the language model uses at prefill: ``(batch, seq_len)`` for 1-D RoPE.

        Left padding is honoured: the first real token of each row is at position 0.
        """
        if attention_mask is None:
            return torch.arange(input_ids.shape[1], device=input_ids.device).expand(input_ids.shape[0], -1)
        positions = attention_mask.long().cumsum(-1) - 1
        return positions.masked_fill(attention_mask == 0, 0)

    def encode_vision(self, **inputs: Any) -> list[torch.Tensor]:
        """Run the vision encoder and projector alone; one ``(tokens, hidden)`` tensor per image or video."""
        raise NotImplementedError

    # -- helpers for subclasses ---------------------------------------------------------------------------------
    def _token_id(self, name: str) -> int:
        """A special token id from the model config (``image_token_id`` etc.), with a clear error if missing.

        Configs that spell it ``..._token_index`` (Qwen2.5-Omni, older LLaVA) are read too.
        """
        names = (name, name.removesuffix("_id") + "_index")
        for config in (self.model.config, getattr(self.model.config, "thinker_config", None)):
            for key in names:
                if config is not None and getattr(config, key, None) is not None:
                    return int(getattr(config, key))
        raise ValueError(f"{type(self.model).__name__}'s config has no {name!r}")
