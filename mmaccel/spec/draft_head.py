"""An MSD-style draft head (EAGLE architecture, MSD's multimodal input): one decoder layer of the target's own type
that predicts the target's next last-layer feature, read out by the target's own LM head.

At position ``t`` the head's input is ``fc([embed(x_{t+1}); f_t])`` — the next token's embedding fused with the
target's final (post-norm) hidden state — except at visual positions, where it is the target's visual embedding
itself (MSD's decoupling: image tokens carry content a token embedding cannot). The layer's output at ``t`` is the
predicted ``f_{t+1}``, and ``lm_head(f_{t+1})`` the distribution of ``x_{t+2}``. Drafting runs the head on its own
predictions, autoregressively, with its own KV cache.

:class:`DraftHeadCandidates` plugs it into transformers' assisted decoding (it asks the target for its hidden states
through ``model_kwargs_overrides``), keeping the head's cache in step with what the target verified: positions
whose real feature is known are fed once; drafted positions are cropped after each verification.

Row ``t`` of the head carries token ``t + 1`` and sits at that token's position (:func:`head_positions`): on M-RoPE
families (Qwen2-VL, Qwen2.5-VL, Qwen2.5-Omni) the prompt's 3-D positions, visual grids included, then decode's
shifted text positions, as the target has them.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import DynamicCache

from .candidates import DraftCandidates
from .stats import AcceptanceStats

HEAD_FILE = "draft_head.safetensors"


class DraftHead(nn.Module):
    """``fc`` + one decoder layer of the target's type (its embeddings, rotary embedding and LM head are borrowed
    from the target, through its adapter, at call time; never copied)."""

    def __init__(self, adapter: Any):
        super().__init__()
        config = copy.deepcopy(adapter.text_config)
        config._attn_implementation = "sdpa"
        hidden = config.hidden_size
        self.fc = nn.Linear(2 * hidden, hidden)
        self.layer = type(adapter.decoder_layers[0])(config, layer_idx=0)

    def forward(self, adapter: Any, features: torch.Tensor, next_tokens: torch.Tensor, positions: torch.Tensor,
                visual: torch.Tensor | None = None, cache: DynamicCache | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted next features ``(B, L, h)`` for inputs at ``positions`` (``(B, L)``; M-RoPE families: their
        ``(3, B, L)`` temporal, height and width positions): ``features`` ``(B, L, h)``
        the target's (or predicted) features there, ``next_tokens`` ``(B, L)`` the following tokens; ``visual``
        ``(B, L, h)`` with NaN rows where the position is not visual, replaces the fused input elsewhere. ``mask``
        ``(L, cached + L)``, True where a row may attend, replaces the causal mask over the cache and the new rows
        (the trainer's unrolled drafts need it)."""
        embeds = adapter.model.get_input_embeddings()(next_tokens)
        inputs = self.fc(torch.cat([embeds.to(features.dtype), features], dim=-1))
        if visual is not None:
            is_visual = ~torch.isnan(visual[..., :1])
            inputs = torch.where(is_visual, torch.nan_to_num(visual).to(inputs.dtype), inputs)
        past = cache.get_seq_length() if cache is not None else 0
        length = inputs.shape[1]
        if mask is not None:
            mask = mask[None, None]
        elif length > 1:  # (one new position sees the whole cache: no mask)
            rows = torch.arange(length, device=inputs.device)[:, None] + past
            mask = (torch.arange(past + length, device=inputs.device)[None, :] <= rows)[None, None]
        rotary = adapter.language_model.rotary_emb(inputs, position_ids=positions)
        text_positions = positions if positions.dim() == 2 else None  # (the layers take M-RoPE's through rotary)
        return self.layer(inputs, attention_mask=mask, position_ids=text_positions, cache=cache,
                          use_cache=cache is not None, position_embeddings=rotary)

    def save(self, folder: str | Path) -> Path:
        """Write the head's weights to ``folder/draft_head.safetensors``."""
        path = Path(folder) / HEAD_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(path))
        return path

    @classmethod
    def load(cls, adapter: Any, folder: str | Path) -> DraftHead:
        """A head for the target behind ``adapter`` with the weights saved in ``folder``."""
        path = Path(folder) / HEAD_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no draft head at {path}; train one with python -m mmaccel.spec.train")
        head = cls(adapter)
        head.load_state_dict(load_file(str(path)))
        return head


def visual_embeddings(adapter: Any, input_ids: torch.Tensor, features: dict[str, list[torch.Tensor]]
                      ) -> torch.Tensor | None:
    """``(B, L, h)``: the target's visual embeddings at the visual positions of ``input_ids``, NaN elsewhere;
    ``features`` maps ``"image"`` / ``"video"`` to the encoder's outputs in order (``None`` without any)."""
    out = None
    for modality, parts in features.items():
        if not parts:
            continue
        mask = input_ids == adapter._token_id(f"{modality}_token_id")
        values = torch.cat([p.reshape(-1, p.shape[-1]) for p in parts])[:int(mask.sum())]
        if out is None:
            out = torch.full((*input_ids.shape, values.shape[-1]), float("nan"), dtype=values.dtype,
                             device=input_ids.device)
        out[mask] = values.to(out.dtype)
    return out


def encoder_features(model: Any, inputs: dict[str, Any]) -> dict[str, list[torch.Tensor]]:
    """The target's image and video encoder outputs for processor ``inputs``, as ``generate`` computes them."""
    inner = model.model
    features: dict[str, list[torch.Tensor]] = {}
    if inputs.get("pixel_values") is not None:
        extra = {k: inputs[k] for k in ("image_sizes", "image_grid_thw") if inputs.get(k) is not None}
        features["image"] = list(inner.get_image_features(pixel_values=inputs["pixel_values"], **extra).pooler_output)
    if inputs.get("pixel_values_videos") is not None:
        extra = {k: inputs[k] for k in ("video_grid_thw",) if inputs.get(k) is not None}
        features["video"] = list(inner.get_video_features(pixel_values_videos=inputs["pixel_values_videos"],
                                                          **extra).pooler_output)
    return features


def prompt_rope_positions(adapter: Any, input_ids: torch.Tensor, inputs: dict[str, Any]) -> torch.Tensor | None:
    """``(3, 1, L)``: the temporal, height and width positions of an M-RoPE target's prompt ``input_ids`` (batch 1),
    as its prefill sees them (``inputs`` holds the grids and ``mm_token_type_ids``); ``None`` for 1-D RoPE."""
    if not adapter.multimodal_rope:
        return None
    given = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    return adapter.position_ids(input_ids, inputs.get("attention_mask"), **given)[1:]


def head_positions(prompt_rope: torch.Tensor | None, start: int, stop: int, device: torch.device) -> torch.Tensor:
    """The positions of the head's rows ``start..stop - 1`` (:func:`head_positions_of`)."""
    return head_positions_of(prompt_rope, torch.arange(start, stop, device=device))


def head_positions_of(prompt_rope: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor:
    """The positions of the head's ``rows`` (ascending indices). Row ``t`` carries token ``t + 1`` (its embedding,
    or its visual embedding) and sits at that token's position: ``(1, n)`` for 1-D RoPE; with ``prompt_rope``
    (:func:`prompt_rope_positions`) ``(3, 1, n)``, the prompt's own 3-D positions and, after the prompt, text
    positions shifted as the target's decode shifts them (by the prompt's largest position + 1 - its length, on
    all three axes)."""
    tokens = rows[None] + 1
    if prompt_rope is None:
        return tokens
    prompt = prompt_rope.to(rows.device)
    length = prompt.shape[-1]
    after = (tokens + int(prompt.max()) + 1 - length)[None].expand(3, -1, -1)
    inside = prompt[..., tokens[0].clamp(max=length - 1)]
    return torch.where(tokens[None] < length, inside, after)


class DraftHeadCandidates(DraftCandidates):
    """Drafts up to ``num_tokens`` tokens per step with a :class:`DraftHead` (greedy draft, stopped early where the
    head's probability of its own guess falls under ``min_confidence``, as transformers' assistants do), for
    assisted decoding."""

    requires_model_outputs = True
    model_kwargs_overrides = {"output_hidden_states": True}

    def __init__(self, target: Any, adapter: Any, head: DraftHead, num_tokens: int, eos_token_ids: Any,
                 max_length: int, stats: AcceptanceStats, min_confidence: float = 0.4):
        self.target, self.adapter, self.head = target, adapter, head
        self.num_tokens, self.eos_token_ids, self.max_length, self.stats = num_tokens, eos_token_ids, max_length, stats
        self.min_confidence = min_confidence
        self.cache = DynamicCache()
        self.fed = 0  # positions whose real feature the head has consumed
        self.dropped = 0  # of those, positions a pruned prefill returned no feature for (not in the head's cache)
        self.forward_start = 0  # first position the target's last forward processed
        self.visual: torch.Tensor | None = None
        self.prompt_rope: torch.Tensor | None = None  # an M-RoPE target's (3, 1, L) prompt positions
        self._drafted = 0
        self._last_prediction: torch.Tensor | None = None

    @torch.no_grad()
    def get_candidates(self, input_ids: torch.LongTensor, model_kwargs: dict | None = None,
                       model_outputs: Any = None, is_first_iteration: bool = False, **kwargs: Any
                       ) -> tuple[torch.LongTensor, None]:
        """``input_ids`` and a draft continuing it (none before the target's first forward)."""
        length = input_ids.shape[1]
        if model_outputs is None:
            encoded = (model_kwargs or {}).get("mm_encoder_outputs") or {}
            self.visual = visual_embeddings(self.adapter, input_ids, {
                modality: list(output.pooler_output) for modality, output in encoded.items()
                if getattr(output, "pooler_output", None) is not None})
            self.prompt_rope = prompt_rope_positions(self.adapter, input_ids, model_kwargs or {})
            self.forward_start, self._drafted, self.dropped = 0, 0, 0
            return input_ids, None
        features = model_outputs.hidden_states[-1]
        self._crop(self.fed)
        new = range(self.fed, length - 1)  # positions whose feature and next token are both known now
        if len(new):
            rows = torch.arange(new.start, new.stop, device=input_ids.device)
            known = features[:, new.start - self.forward_start:new.stop - self.forward_start]
            if known.shape[1] < len(new):  # a pruned prefill (prune="budget") returns its kept positions only
                rows = self._returned_rows(features.shape[1], rows)
                known = features[:, -rows.shape[0]:]
                self.dropped += len(new) - rows.shape[0]
            visual = self._visual(new)
            predicted = self.head(self.adapter, known, input_ids[:, rows + 1],
                                  head_positions_of(self.prompt_rope, rows),
                                  visual[:, rows - new.start] if visual is not None else None, self.cache)
            self.fed, self._last_prediction = new.stop, predicted[:, -1:]
        room = min(self.num_tokens, self.max_length - length - 1)
        draft = self._draft(input_ids, room) if room > 0 else input_ids.new_empty((1, 0))
        self.forward_start = length - 1
        self._drafted = draft.shape[1]
        return torch.cat([input_ids, draft], dim=1), None

    def _draft(self, input_ids: torch.Tensor, count: int) -> torch.Tensor:
        """Greedy draft: the head fed its own predictions, from its prediction at the last verified position."""
        predicted = self._last_prediction
        lm_head = self.target.get_output_embeddings()
        tokens = []
        for step in range(count):
            probabilities = lm_head(predicted[:, -1:]).float().softmax(-1)
            confidence, token = probabilities.max(-1)
            if step > 0 and float(confidence) < self.min_confidence:
                break  # an unlikely guess costs a head step now and a wasted verification row later
            tokens.append(token)
            if self.eos_token_ids is not None and bool(torch.isin(token, self.eos_token_ids.to(token.device))):
                break
            if step + 1 < count:
                at = input_ids.shape[1] - 1 + step
                position = head_positions(self.prompt_rope, at, at + 1, input_ids.device)
                predicted = self.head(self.adapter, predicted[:, -1:], token, position, None, self.cache)
        return torch.cat(tokens, dim=1) if tokens else input_ids.new_empty((1, 0))

    def _visual(self, span: range) -> torch.Tensor | None:
        if self.visual is None or span.start >= self.visual.shape[1]:
            return None
        # the head's input at t stands for position t + 1's token: it is visual when that token is
        chunk = self.visual[:, span.start + 1:span.stop + 1]
        pad = span.stop - span.start - chunk.shape[1]
        if pad:
            chunk = torch.cat([chunk, chunk.new_full((1, pad, chunk.shape[-1]), float("nan"))], dim=1)
        return chunk

    def _returned_rows(self, count: int, rows: torch.Tensor) -> torch.Tensor:
        """The positions among ``rows`` whose features the target's last forward returned, ``count`` of them: the
        prune component's kept prefill positions, or else (an unknown cut) the last ``count``."""
        from ..patch import get_state

        state = get_state(self.target)
        for component in state.components if state is not None else []:
            kept = getattr(getattr(component, "plan", None), "kept", None)
            if kept is not None and kept.shape == (1, count):
                return kept[0].to(rows.device)
        return rows[-count:]

    def _crop(self, length: int) -> None:
        length -= self.dropped
        extra = self.cache.get_seq_length() - length
        if extra > 0:
            self.cache.crop(-extra)
