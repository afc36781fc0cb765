"""Carrier-token streaming video sessions (VideoScan-style, training-free): ``mmaccel.stream(model, processor)``.

The session keeps one KV cache for a video that arrives frame by frame:

``[prompt before the video][frame 1 tokens][carrier 1][frame 2 tokens][carrier 2] ...``

- Every frame is prefilled once, against the cache so far (``frames_per_forward`` frames per forward). After its
  visual tokens comes one **carrier** token whose input embedding is the mean of the frame's visual embeddings
  (VideoScan's code: after the projector and pooling), so the carrier's keys and values, computed while the frame's
  tokens are present, carry what the frame showed.
- Once a frame is older than the ``recent_frames`` newest, its visual tokens' KV is **evicted**; its carrier stays,
  with the ``topk_tokens`` frame tokens whose keys (at the middle layer, averaged over heads) are closest to the
  carrier's.
- At most ``max_frames`` frames are remembered: past that, of the two adjacent carriers whose embeddings are the
  most alike, the older is dropped (VideoScan's memory bank). Memory is bounded by the configuration, whatever the
  stream's length.
- :meth:`StreamSession.ask` reads the question (the chat template's text after the video) against the cache and
  yields the answer's text as it is generated; the question and answer are then cropped away, so the stream goes on.

With ``method="none"`` the session streams densely: frames are prefilled once and kept whole, without carriers
(the baseline streaming is measured against).

Positions: ``"compact"`` gives every new token the cache's current length (bounded; tokens after an eviction
reuse positions, as in VideoScan), ``"dense"`` the position it would have had had nothing been evicted.
Supported families: LLaVA-NeXT-Video and LLaVA-OneVision (1-D RoPE, one feature block per frame).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import DynamicCache, TextIteratorStreamer

from ..adapters import get_adapter
from ..compat import require_supported_transformers
from ..config import StreamConfig
from ..memory import tensor_bytes

#: The model types a session supports.
STREAM_FAMILIES = ("llava_next_video", "llava_onevision")


@dataclass
class FrameMemory:
    """One remembered frame: where it is in the stream and what of it the cache holds."""

    index: int
    timestamp: float
    carrier: torch.Tensor  # (hidden,) the carrier's input embedding
    tokens: int  # cache tokens it holds: visual tokens still kept, then the carrier
    full: bool  # whether all its visual tokens are still there


class StreamSession:
    """A live video conversation over a bounded KV cache (see the module docstring)."""

    def __init__(self, model: Any, processor: Any, config: StreamConfig | dict | None = None):
        require_supported_transformers()
        config = StreamConfig.from_value(config if config is not None else {"method": "carrier"})
        if model.config.model_type not in STREAM_FAMILIES:
            raise ValueError(f"streaming supports model types {', '.join(STREAM_FAMILIES)}; got "
                             f"{model.config.model_type!r}")
        self.model, self.processor, self.config = model, processor, config
        self.adapter = get_adapter(model)
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self._prefix_ids = self._template_ids("")[0]
        self.reset()

    # -- public API ---------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the stream: an empty cache holding only the prompt before the video."""
        self.cache = DynamicCache(config=self.model.config.get_text_config())
        self.memory: list[FrameMemory] = []
        self.frames_seen = 0
        self.next_position = 0  # position of the next token in "dense" mode
        self.last_ttft_s: float | None = None
        self.last_ingest_s: float | None = None
        self.visual_tokens_seen = 0
        self._forward(self._embed_ids(self._prefix_ids))

    def add_frames(self, frames: Sequence[Any] | np.ndarray, timestamps: Sequence[float] | None = None) -> None:
        """Ingest frames (``(H, W, 3)`` uint8 arrays or PIL images, or one ``(N, H, W, 3)`` array) in order: each is
        prefilled once with its carrier, then the cache is cut back to what the configuration keeps."""
        frames = list(frames)
        if not frames:
            return
        if timestamps is None:
            timestamps = [float(self.frames_seen + i) / self.config.fps for i in range(len(frames))]
        if len(timestamps) != len(frames):
            raise ValueError(f"{len(frames)} frames but {len(timestamps)} timestamps")
        start = time.perf_counter()
        step = self.config.frames_per_forward
        for first in range(0, len(frames), step):
            chunk = frames[first:first + step]
            features = self._frame_features(chunk)  # one (T, hidden) per frame
            pieces = []
            carriers = self.config.enabled
            for offset, frame_tokens in enumerate(features):
                carrier = frame_tokens.mean(dim=0)
                pieces += [frame_tokens, carrier[None]] if carriers else [frame_tokens]
                self.memory.append(FrameMemory(self.frames_seen, float(timestamps[first + offset]), carrier,
                                               frame_tokens.shape[0] + int(carriers), True))
                self.frames_seen += 1
                self.visual_tokens_seen += frame_tokens.shape[0]
            self._forward(torch.cat(pieces))
            if carriers:
                self._evict()
        self.last_ingest_s = (time.perf_counter() - start) / len(frames)

    def ask(self, question: str, **generate_kwargs: Any) -> Iterator[str]:
        """Answer ``question`` about the frames so far, yielding text as it is generated (greedy unless
        ``generate_kwargs`` say otherwise; ``max_new_tokens`` defaults to 64). The cache is left as it was."""
        suffix = self._template_ids(question)[1]
        cached = self.cache.get_seq_length()
        pad = self.processor.tokenizer.pad_token_id or 0
        input_ids = torch.cat([torch.full((1, cached), pad, dtype=torch.long), suffix[None]], dim=1).to(self.device)
        if self.config.positions == "dense":
            positions = torch.cat([torch.zeros(cached, dtype=torch.long),
                                   self.next_position + torch.arange(len(suffix))])
        else:
            positions = torch.arange(cached + len(suffix))
        streamer = TextIteratorStreamer(self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = {"max_new_tokens": 64, "do_sample": False, **generate_kwargs, "streamer": streamer,
                  "cache": self.cache, "attention_mask": torch.ones_like(input_ids),
                  "position_ids": positions[None].to(self.device)}
        failure: list[BaseException] = []

        def run() -> None:
            try:
                with torch.no_grad():
                    self.model.generate(input_ids=input_ids, **kwargs)
            except BaseException as err:  # re-raised in the caller's thread
                failure.append(err)
                streamer.end()

        start = time.perf_counter()
        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        first = True
        try:
            for text in streamer:
                if first and text:
                    self.last_ttft_s, first = time.perf_counter() - start, False
                yield text
        finally:
            worker.join()
            self._crop_to(cached)
        if failure:
            raise failure[0]

    def stats(self) -> dict[str, Any]:
        """Frames seen and remembered, tokens in the cache and the share of the visual tokens seen that it keeps,
        KV bytes, the last answer's time to first token and the last mean ingest time per frame."""
        cached = self.cache.get_seq_length()
        visual_kept = cached - len(self._prefix_ids) - (len(self.memory) if self.config.enabled else 0)
        return {"frames_seen": self.frames_seen, "frames_remembered": len(self.memory), "tokens_in_cache": cached,
                "visual_tokens_seen": self.visual_tokens_seen, "visual_tokens_kept": visual_kept,
                "kv_bytes": tensor_bytes(self.cache), "last_ttft_s": self.last_ttft_s,
                "ingest_s_per_frame": self.last_ingest_s}

    # -- internals ----------------------------------------------------------------------------------------------
    def _template_ids(self, question: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids of the chat prompt before the video and after it (the question and the assistant's turn)."""
        content = [{"type": "video"}, {"type": "text", "text": question}]
        prompt = self.processor.apply_chat_template([{"role": "user", "content": content}],
                                                    add_generation_prompt=True, tokenize=False)
        before, after = prompt.split(self.processor.video_token, 1)
        tokenizer = self.processor.tokenizer
        return (torch.tensor(tokenizer(before).input_ids, dtype=torch.long),
                torch.tensor(tokenizer(after, add_special_tokens=False).input_ids, dtype=torch.long))

    def _embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(ids.to(self.device))

    def _frame_features(self, frames: list[Any]) -> list[torch.Tensor]:
        """The projected visual tokens of each frame, ``(T, hidden)``, as the model's video path makes them."""
        video = np.stack([np.asarray(frame.convert("RGB") if hasattr(frame, "convert") else frame)
                          for frame in frames])
        pixels = self.processor.video_processor(videos=[video], return_tensors="pt")["pixel_values_videos"]
        pixels = pixels.to(self.device, self.dtype)
        features = self.adapter.encode_vision(pixel_values_videos=pixels)[0]
        _, count, per_frame, _ = self.adapter.video_features_layout(pixel_values_videos=pixels)
        return list(features[:count * per_frame].view(count, per_frame, -1))  # drops a trailing newline

    def _forward(self, embeds: torch.Tensor) -> None:
        """Prefill ``embeds`` ``(L, hidden)`` into the cache."""
        length = embeds.shape[0]
        if self.config.positions == "dense":
            start = self.next_position
        else:
            start = self.cache.get_seq_length()
        positions = torch.arange(start, start + length, device=self.device)[None]
        with torch.no_grad():
            self.model.model(inputs_embeds=embeds[None].to(self.dtype), position_ids=positions, cache=self.cache,
                             use_cache=True)
        self.next_position += length

    def _evict(self) -> None:
        """Cut the cache back to what the configuration keeps (module docstring)."""
        keep = torch.ones(self.cache.get_seq_length(), dtype=torch.bool)
        spans, offset = [], len(self._prefix_ids)  # each frame's cache positions before this pass
        for entry in self.memory:
            spans.append((offset, offset + entry.tokens))
            offset += entry.tokens
        recent = len(self.memory) - self.config.recent_frames
        for index, (entry, (start, end)) in enumerate(zip(self.memory, spans, strict=True)):
            if entry.full and index < recent:
                kept = self._salient_tokens(start, end - start - 1)
                keep[start:end - 1] = False
                keep[kept] = True
                entry.tokens, entry.full = len(kept) + 1, False
        while len(self.memory) > self.config.max_frames:
            drop = self._most_redundant_frame()
            start, end = spans[drop]
            keep[start:end] = False
            del self.memory[drop], spans[drop]
        if not keep.all():
            index = keep.nonzero()[:, 0].to(self.device)
            for layer in self.cache.layers:
                layer.keys = layer.keys.index_select(2, index)
                layer.values = layer.values.index_select(2, index)

    def _salient_tokens(self, start: int, visual: int) -> torch.Tensor:
        """Cache positions of the ``topk_tokens`` visual tokens of the frame at ``start`` whose keys, at the middle
        layer and averaged over heads, have the largest dot product with the carrier's key (in order)."""
        k = min(self.config.topk_tokens, visual)
        if k == 0:
            return torch.zeros(0, dtype=torch.long)
        keys = self.cache.layers[len(self.cache.layers) // 2].keys[0].float()  # (H, L, D)
        scores = (keys[:, start:start + visual] * keys[:, start + visual:start + visual + 1]).sum(-1).mean(0)
        return start + scores.topk(k).indices.sort().values.cpu()

    def _most_redundant_frame(self) -> int:
        """Index in :attr:`memory` of the older frame of the most alike adjacent pair of carriers."""
        carriers = torch.stack([entry.carrier.float() for entry in self.memory])
        alike = torch.nn.functional.cosine_similarity(carriers[:-1], carriers[1:], dim=-1)
        return int(alike.argmax())

    def _crop_to(self, length: int) -> None:
        """Drop the question and answer from the cache, and their storage with them (a crop alone leaves views)."""
        extra = self.cache.get_seq_length() - length
        if extra > 0:
            self.cache.crop(-extra)
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys.clone(), layer.values.clone()


def stream(model: Any, processor: Any, config: StreamConfig | dict | None = None) -> StreamSession:
    """A :class:`StreamSession` on ``model`` (``config``: a :class:`~mmaccel.config.StreamConfig`, a dict of its
    fields, or ``None`` for carrier streaming at the defaults)."""
    return StreamSession(model, processor, config)
