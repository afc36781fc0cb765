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
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import DynamicCache
from transformers.generation.candidate_generator import CandidateGenerator

from .stats import AcceptanceStats

HEAD_FILE = "draft_head.safetensors"


class DraftHead(nn.Module):
    """``fc`` + one decoder layer of the target's type (its embeddings, rotary embedding and LM head are borrowed
    from the target, through its adapter, at call time; never copied)."""

    def __init__(self, adapter: Any):
        super().__init__()
        if adapter.multimodal_rope:
            raise ValueError("the draft head supports 1-D RoPE families (LLaVA, VideoLLaMA3) for now; "
                             f"got {adapter.model.config.model_type!r}")
        config = copy.deepcopy(adapter.text_config)
        config._attn_implementation = "sdpa"
        hidden = config.hidden_size
        self.fc = nn.Linear(2 * hidden, hidden)
        self.layer = type(adapter.decoder_layers[0])(config, layer_idx=0)
        self.lean = False  # run the layer written out (_lean_layer) when drafting; see use_lean_layer

    def forward(self, adapter: Any, features: torch.Tensor, next_tokens: torch.Tensor, positions: torch.Tensor,
                visual: torch.Tensor | None = None, cache: DynamicCache | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted next features ``(B, L, h)`` for inputs at ``positions`` ``(B, L)``: ``features`` ``(B, L, h)``
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
        if self.lean and cache is not None and not torch.is_grad_enabled():
            return self._lean_layer(inputs, rotary, cache, mask)
        return self.layer(inputs, attention_mask=mask, position_ids=positions, cache=cache, use_cache=cache is not None,
                          position_embeddings=rotary)

    def _lean_layer(self, inputs: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor], cache: DynamicCache,
                    mask: torch.Tensor | None) -> torch.Tensor:
        """The decoder layer's own computation (pre-norm attention over the cache, then the MLP) written out with
        the layer's modules: a draft step of a one-layer head is mostly the per-call overhead of transformers'
        attention wrappers, which this skips (the drafted tokens only decide the speed, never the output)."""
        attention = self.layer.self_attn
        batch, length, _ = inputs.shape
        normed = self.layer.input_layernorm(inputs)
        shape = (batch, length, -1, attention.head_dim)
        query = attention.q_proj(normed).view(shape).transpose(1, 2)
        key = attention.k_proj(normed).view(shape).transpose(1, 2)
        value = attention.v_proj(normed).view(shape).transpose(1, 2)
        cos, sin = rotary
        query, key = _rotate(query, cos, sin), _rotate(key, cos, sin)
        key, value = cache.update(key, value, 0)
        attended = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=attention.scaling,
                                                  enable_gqa=key.shape[1] != query.shape[1])
        hidden = inputs + attention.o_proj(attended.transpose(1, 2).reshape(batch, length, -1))
        return hidden + self.layer.mlp(self.layer.post_attention_layernorm(hidden))

    def use_lean_layer(self, adapter: Any) -> bool:
        """Turn on the written-out layer for drafting where the layer has the modules it uses and nothing more
        (no per-head norms, no sliding window) and it gives the layer's own outputs on a probe (a prompt, then
        one more token, through a cache); returns whether it is on."""
        attention = getattr(self.layer, "self_attn", None)
        needed = ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim", "scaling")
        extra = ("q_norm", "k_norm")
        self.lean = False
        if (attention is None or not all(hasattr(attention, name) for name in needed)
                or any(hasattr(attention, name) for name in extra) or getattr(attention, "sliding_window", None)
                or not all(hasattr(self.layer, name) for name in ("input_layernorm", "post_attention_layernorm",
                                                                    "mlp"))):
            return False
        parameter = self.fc.weight
        generator = torch.Generator().manual_seed(0)
        features = torch.randn(1, 6, parameter.shape[0], generator=generator).to(parameter)
        tokens = torch.randint(0, adapter.model.get_input_embeddings().num_embeddings, (1, 6), generator=generator)
        tokens, positions = tokens.to(parameter.device), torch.arange(6, device=parameter.device)[None]
        outputs = []
        with torch.no_grad():
            for lean in (False, True):
                self.lean, cache = lean, DynamicCache()
                first = self(adapter, features[:, :5], tokens[:, :5], positions[:, :5], cache=cache)
                outputs.append(torch.cat([first, self(adapter, features[:, 5:], tokens[:, 5:], positions[:, 5:],
                                                      cache=cache)], dim=1).float())
        scale = float(outputs[0].abs().max()) + 1e-6
        tolerance = 1e-4 if parameter.dtype == torch.float32 else 2e-2
        self.lean = bool((outputs[0] - outputs[1]).abs().max() <= tolerance * scale)
        return self.lean

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


def _rotate(states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding of ``states`` ``(B, heads, L, d)`` by ``cos``/``sin`` ``(B, L, d)`` (halves
    rotated, as the Llama family does)."""
    cos, sin = cos[:, None], sin[:, None]
    half = states.shape[-1] // 2
    rotated = torch.cat([-states[..., half:], states[..., :half]], dim=-1)
    return states * cos + rotated * sin


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
        extra = {k: inputs[k] for k in ("image_sizes",) if inputs.get(k) is not None}
        features["image"] = list(inner.get_image_features(pixel_values=inputs["pixel_values"], **extra).pooler_output)
    if inputs.get("pixel_values_videos") is not None:
        features["video"] = list(inner.get_video_features(
            pixel_values_videos=inputs["pixel_values_videos"]).pooler_output)
    return features


class DraftHeadCandidates(CandidateGenerator):
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
        self.forward_start = 0  # first position the target's last forward processed
        self.visual: torch.Tensor | None = None
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
            self.forward_start, self._drafted = 0, 0
            return input_ids, None
        features = model_outputs.hidden_states[-1]
        self._crop(self.fed)
        new = range(self.fed, length - 1)  # positions whose feature and next token are both known now
        if len(new):
            positions = torch.arange(new.start, new.stop, device=input_ids.device)[None]
            known = features[:, new.start - self.forward_start:new.stop - self.forward_start]
            predicted = self.head(self.adapter, known, input_ids[:, new.start + 1:new.stop + 1], positions,
                                  self._visual(new), self.cache)
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
                position = torch.tensor([[input_ids.shape[1] - 1 + step]], device=input_ids.device)
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

    def _crop(self, length: int) -> None:
        extra = self.cache.get_seq_length() - length
        if extra > 0:
            self.cache.crop(-extra)

    def update_candidate_strategy(self, input_ids: torch.LongTensor, scores: torch.Tensor, num_matches: int) -> None:
        """Record how many of the last draft's tokens the target accepted."""
        self.stats.record(self._drafted, int(num_matches))
