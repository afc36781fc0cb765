"""Fork-merge decoding for audio-visual prompts (FMD, Jung et al., arXiv 2505.20873).

An audio-visual model answering from video and audio together tends to follow one modality and ignore the other.
Fork-merge lets each modality speak first: the first ``fork_layers`` decoder layers run twice, once on the prompt
with its audio embeddings zeroed (the visual branch) and once with its visual embeddings zeroed (the audio branch);
their hidden states are merged and the remaining layers run once on the merge.

- **Merge weights** (FMD publishes no formula; this is ours): at the prefill, in the last forked layer, the prompt's
  last query attends to its own modality with mass ``m_v`` in the visual branch and ``m_a`` in the audio branch;
  ``w_v = m_v / (m_v + m_a)``, ``w_a = 1 - w_v``, kept for the whole ``generate`` call.
- **Strength** ``alpha``: ``h = (1 - alpha) h_joint + alpha (w_v h_v + w_a h_a)``, ``h_joint`` being the
  unforked prompt's state (a third row, run only when ``alpha != 1``); ``alpha = 1`` is fork-merge proper,
  ``alpha = 0`` plain decoding (nothing forks), ``alpha > 1`` pushes away from the joint state.
- **Decoding** forks too: every new token runs the forked layers in each branch, against the branch's own keys and
  values (the forked layers' cache holds one row per branch, the others one row), so each branch stays the model
  reading its own modality.

The fork is a batch dimension: a pre-hook on the first decoder layer repeats the hidden states into branch rows
(zeroing each branch's masked modality at the prefill) and a hook on the last forked layer merges the rows back.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..attention import OBSERVER_ATTR
from .blind import last_query_attention


class ForkMerge:
    """Fork-merge hooks on one model's decoder layers (see the module docstring); inactive until :meth:`arm`."""

    def __init__(self, layers: nn.ModuleList, attention_modules: list[nn.Module], fork_layers: int, alpha: float):
        if not 1 <= fork_layers < len(layers):
            raise ValueError(f"fork_layers={fork_layers} must lie in 1..{len(layers) - 1} (the model has "
                             f"{len(layers)} decoder layers and at least one must run on the merge)")
        self.fork_layers, self.alpha = fork_layers, alpha
        self.observed = attention_modules[fork_layers - 1]
        self.visual: torch.Tensor | None = None  # (1, L) masks of the armed prompt
        self.audio: torch.Tensor | None = None
        self.weights: tuple[float, float] | None = None  # (w_v, w_a) of the armed call
        self.fixed_weights: tuple[float, float] | None = None  # set to bypass the attention-derived weights
        self._prefilled = False
        self._handles = [layers[0].register_forward_pre_hook(self._fork, with_kwargs=True),
                         layers[fork_layers - 1].register_forward_hook(self._merge)]
        setattr(self.observed, OBSERVER_ATTR, self._observe)

    @property
    def rows(self) -> int:
        """Branch rows in the forked layers: visual, audio, and the joint prompt unless ``alpha == 1``."""
        return 2 if self.alpha == 1 else 3

    def remove(self) -> None:
        """Take every hook off."""
        for handle in self._handles:
            handle.remove()
        self.observed.__dict__.pop(OBSERVER_ATTR, None)

    def arm(self, visual: torch.Tensor, audio: torch.Tensor) -> None:
        """Fork the coming ``generate`` call, whose prompt has these ``(1, L)`` visual and audio token masks."""
        if visual.shape[0] != 1:
            raise ValueError("contrast='fork_merge' supports batch 1 (each row would fork on its own layout)")
        if not visual.any() or not audio.any():
            raise ValueError("contrast='fork_merge' needs a prompt with both audio and visual (image or video) "
                             f"tokens; this one has {int(visual.sum())} visual and {int(audio.sum())} audio tokens")
        self.visual, self.audio, self.weights, self._prefilled = visual, audio, self.fixed_weights, False

    def disarm(self) -> None:
        """Stop forking (the call is over)."""
        self.visual = self.audio = None

    def _fork(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        if self.visual is None:
            return None
        hidden = args[0] if args else kwargs["hidden_states"]
        if hidden.shape[0] != 1:
            raise RuntimeError(f"fork-merge expected one row at the first decoder layer, got {hidden.shape[0]}")
        rows = hidden.expand(self.rows, -1, -1).clone()
        if not self._prefilled:
            length = self.visual.shape[1]
            if hidden.shape[1] != length:
                raise RuntimeError(f"fork-merge expected the prefill of the {length}-token prompt, got "
                                   f"{hidden.shape[1]} tokens (prefill pruning does not combine with it)")
            keep = torch.stack([~self.audio[0], ~self.visual[0]]).to(hidden.device, hidden.dtype)
            rows[:2] = rows[:2] * keep[..., None]
        if args:
            return (rows, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": rows}

    def _observe(self, query: torch.Tensor, key: torch.Tensor, attention_mask: Any, scaling: float | None) -> None:
        if self.visual is None or self._prefilled or self.weights is not None:
            return
        attention = last_query_attention(query, key, attention_mask, scaling)[:, -self.visual.shape[1]:]
        visual_mass = float(attention[0][self.visual[0].to(attention.device)].sum())
        audio_mass = float(attention[1][self.audio[0].to(attention.device)].sum())
        total = visual_mass + audio_mass
        w_v = visual_mass / total if total > 0 else 0.5
        self.weights = (w_v, 1 - w_v)

    def _merge(self, module: nn.Module, args: tuple, output: Any) -> Any:
        if self.visual is None:
            return None
        hidden = output[0] if isinstance(output, tuple) else output
        w_v, w_a = self.weights if self.weights is not None else (0.5, 0.5)
        merged = w_v * hidden[0:1] + w_a * hidden[1:2]
        if self.rows == 3:
            merged = (1 - self.alpha) * hidden[2:3] + self.alpha * merged
        self._prefilled = True
        merged = merged.to(hidden.dtype)
        return (merged, *output[1:]) if isinstance(output, tuple) else merged
