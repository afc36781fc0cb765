"""CODE's contrast branch: the model's own description of its media, written into the prompt in their place.

CODE (Kim et al., NeurIPS 2024) contrasts the answer given the image with the answer given the model's own
description of that image. :class:`SelfDescription` builds both inputs from the caller's processed prompt, for any
family, without the raw media:

1. **The description prompt** keeps the caller's prompt up to its last media token (system prompt, media
   placeholders, frame separators, every media tensor unchanged) and ends with the rest of the processor's chat
   template for ``[media, description prompt]`` — the tokens after the media placeholder, e.g.
   ``"\\nDescribe the image. ASSISTANT:"``. The model answers it greedily, at most ``max_tokens`` tokens.
2. **The contrast input** is the caller's prompt with its media span (first to last media token) replaced by those
   description tokens, and no media tensors: a text-only prompt, which every family positions by itself.

Descriptions are cached per model and media (their tensors' bytes), as CODE caches one per image, so several
questions about one image pay for one description — also across ``accelerate`` calls on the same model, as an
evaluation that switches configurations makes (:func:`description_cache`).
"""

from __future__ import annotations

import hashlib
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

#: The media kinds a processor may name a placeholder for, in the order they are looked up.
MEDIA_KINDS = ("image", "video", "audio")
_CACHES: weakref.WeakKeyDictionary[nn.Module, OrderedDict[str, list[int]]] = weakref.WeakKeyDictionary()


def description_cache(model: nn.Module) -> OrderedDict[str, list[int]]:
    """The descriptions ``model`` has written, by key (:meth:`SelfDescription.key`); it lives as long as the model."""
    return _CACHES.setdefault(model, OrderedDict())


class SelfDescription:
    """Description prompts, descriptions and contrast inputs for one model and its processor (batch 1).

    ``prompt`` is the instruction the model describes its media with; empty means ``"Describe the image."`` (or
    video, audio: the kind of the prompt's first media token). ``cache`` holds the descriptions by key (give
    :func:`description_cache` to share them across instances), at most ``cache_size`` of them."""

    def __init__(self, processor: Any, prompt: str = "", max_tokens: int = 64, cache_size: int = 256,
                 cache: OrderedDict[str, list[int]] | None = None) -> None:
        self.processor, self.prompt, self.max_tokens, self.cache_size = processor, prompt, max_tokens, cache_size
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.media_ids = self._media_token_ids()
        if not self.media_ids:
            raise ValueError(f"{type(processor).__name__} names no image, video or audio token; CODE needs a "
                             f"multimodal processor")
        self._suffixes: dict[str, list[int]] = {}
        self._descriptions: OrderedDict[str, list[int]] = OrderedDict() if cache is None else cache
        self.generated = 0  # descriptions generated (cache misses)

    def _media_token_ids(self) -> dict[int, str]:
        ids = {}
        for kind in MEDIA_KINDS:
            token = getattr(self.processor, f"{kind}_token", None)
            if isinstance(token, str):
                token_id = self.tokenizer.convert_tokens_to_ids(token)
                if isinstance(token_id, int) and token_id != self.tokenizer.unk_token_id:
                    ids[token_id] = kind
        return ids

    def media_span(self, ids: torch.Tensor) -> tuple[int, int, str]:
        """``(first, last, kind)``: positions of the first and last media tokens of a 1-D prompt and the first's
        kind; raises ``ValueError`` when the prompt holds no media."""
        found = torch.isin(ids, torch.tensor(sorted(self.media_ids), device=ids.device)).nonzero().flatten()
        if found.numel() == 0:
            raise ValueError("contrast='code' describes the prompt's media, but the prompt holds no image, video or "
                             "audio token")
        first, last = int(found[0]), int(found[-1])
        return first, last, self.media_ids[int(ids[first])]

    def instruction(self, kind: str) -> str:
        """The description prompt for media of ``kind``."""
        return self.prompt or f"Describe the {kind}."

    def suffix(self, kind: str) -> list[int]:
        """The chat template's tokens after the media placeholder of a user turn ``[kind, instruction]``, with the
        generation prompt; tokenized with the placeholder in place, so they are the tokens the processor would
        give in that context."""
        if kind not in self._suffixes:
            content = [{"type": kind}, {"type": "text", "text": self.instruction(kind)}]
            text = self.processor.apply_chat_template([{"role": "user", "content": content}],
                                                      add_generation_prompt=True, tokenize=False)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            placeholder = next(token for token, name in self.media_ids.items() if name == kind)
            if placeholder not in ids:
                raise ValueError(f"the chat template of {type(self.processor).__name__} writes no {kind} "
                                 f"placeholder for a {kind} turn")
            last = len(ids) - 1 - ids[::-1].index(placeholder)
            self._suffixes[kind] = ids[last + 1:]
        return self._suffixes[kind]

    def description_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """The description prompt's inputs: the caller's up to its last media token, then :meth:`suffix`; every
        media tensor as given; per-token tensors (``attention_mask``, ``mm_token_type_ids``) cut and extended (1
        for the mask, 0 — text — otherwise)."""
        ids = inputs["input_ids"]
        _, last, kind = self.media_span(ids[0])
        suffix = torch.tensor([self.suffix(kind)], dtype=ids.dtype, device=ids.device)
        out = {}
        for key, value in inputs.items():
            if isinstance(value, torch.Tensor) and value.shape[:2] == ids.shape:
                tail = suffix if key == "input_ids" else torch.full_like(suffix, int(key == "attention_mask"))
                value = torch.cat([value[:, :last + 1], tail.to(value.dtype)], dim=1)
            out[key] = value
        return out

    def key(self, inputs: dict[str, Any]) -> str:
        """The cache key of a prompt's media: the description prompt and length, the media tokens and the bytes of
        every other tensor but the per-token ones."""
        ids = inputs["input_ids"]
        digest = hashlib.sha1(f"{self.prompt}\0{self.max_tokens}".encode())
        first, last, _ = self.media_span(ids[0])
        digest.update(ids[0, first:last + 1].cpu().numpy().tobytes())
        for name in sorted(inputs):
            value = inputs[name]
            if isinstance(value, torch.Tensor) and value.shape[:2] != ids.shape:
                digest.update(name.encode())
                digest.update(value.detach().float().cpu().numpy().tobytes())
        return digest.hexdigest()

    def describe(self, generate: Callable[..., torch.Tensor], inputs: dict[str, Any]) -> list[int]:
        """The model's description of the prompt's media, as token ids without end-of-sequence or padding;
        ``generate`` is the model's own (unpatched by contrastive decoding). Cached per media."""
        if inputs["input_ids"].shape[0] != 1:
            raise ValueError("contrast='code' supports batch 1 (each row would get a description of its own length)")
        key = self.key(inputs)
        if key in self._descriptions:
            self._descriptions.move_to_end(key)
            return self._descriptions[key]
        prompt = self.description_inputs(inputs)
        length = prompt["input_ids"].shape[1]
        with torch.no_grad():
            out = generate(**prompt, max_new_tokens=self.max_tokens, do_sample=False)
        sequences = out if isinstance(out, torch.Tensor) else out.sequences
        stop = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id} - {None}
        description = []
        for token in sequences[0, length:].tolist():
            if token in stop:
                break
            description.append(token)
        self.generated += 1
        self._descriptions[key] = description
        if len(self._descriptions) > self.cache_size:
            self._descriptions.popitem(last=False)
        return description

    def contrast_inputs(self, inputs: dict[str, Any], description: list[int]) -> dict[str, Any]:
        """The caller's prompt with its media span replaced by ``description``, and no media tensors."""
        ids = inputs["input_ids"]
        first, last, _ = self.media_span(ids[0])
        text = torch.tensor([description], dtype=ids.dtype, device=ids.device).reshape(1, -1)
        out = {"input_ids": torch.cat([ids[:, :first], text, ids[:, last + 1:]], dim=1)}
        mask = inputs.get("attention_mask")
        if mask is not None:
            out["attention_mask"] = torch.cat([mask[:, :first], torch.ones_like(text).to(mask.dtype),
                                               mask[:, last + 1:]], dim=1)
        return out
