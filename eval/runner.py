"""Running a benchmark: every sample through every configuration (baseline and presets) in one process, each
answer timed and written as it is made.

Configurations are interleaved per sample (the baseline and each preset answer the same sample back to back), so
a noisy machine affects them alike. Under ``torchrun`` each rank takes every ``world_size``-th sample; rank 0
merges all ranks' records in dataset order once every rank is done, so the metrics equal a single process's.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..bench import prefill_media, timed_generate, visual_token_counts
from ..config import AccelConfig, StreamConfig
from ..memory import tensor_bytes, track_peak_memory
from ..patch import accelerate, restore
from .common import MediaError, Sample, Task
from .store import RecordStore, check_run


@dataclass
class Configuration:
    """A named configuration to evaluate: ``none`` (the unpatched model), a preset, or a JSON config file."""

    name: str
    config: AccelConfig

    @classmethod
    def parse(cls, value: str) -> Configuration:
        """``"none"``, a preset name or a path to a JSON config (named by its file stem)."""
        config = AccelConfig.resolve(value)
        name = Path(value).stem if value.endswith(".json") else value
        return cls(name=name, config=config)

    @property
    def streams(self) -> bool:
        """Whether videos are answered by a :func:`mmaccel.stream` session (the ``stream`` section is enabled)."""
        return self.config.stream.enabled

    def apply(self, model: Any, processor: Any = None) -> None:
        """Put ``model`` in this configuration (``none`` restores it); the ``stream`` section is for sessions.
        ``processor`` is handed to :func:`~mmaccel.accelerate` (``contrast="code"`` needs it)."""
        generate_config = self.config.updated(stream={"method": "none"})
        if self.name == "none" or generate_config == AccelConfig():
            restore(model)
        else:
            accelerate(model, generate_config, processor=processor)


@dataclass
class Shard:
    """This process's place among ``torchrun`` ranks (rank 0 of 1 without it)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_environment(cls) -> Shard:
        """Read ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` as torchrun sets them."""
        return cls(rank=int(os.environ.get("RANK", 0)), world_size=int(os.environ.get("WORLD_SIZE", 1)),
                   local_rank=int(os.environ.get("LOCAL_RANK", 0)))

    def owns(self, sample: Sample) -> bool:
        """Whether this rank answers ``sample``."""
        return sample.index % self.world_size == self.rank

    def barrier(self) -> None:
        """Wait for every rank (gloo, so CPU-only runs work too); nothing to do in a single process."""
        if self.world_size == 1:
            return
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo")
        dist.barrier()

    def close(self) -> None:
        """Leave the process group this shard started (if any)."""
        if self.world_size > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


@dataclass
class RunOptions:
    """How samples are answered and measured."""

    max_new_tokens: int
    warmup: int = 1
    measure_memory: bool = True
    retry_errors: bool = False
    progress: bool = True
    media_first: bool = False  # prefill the media, then read the question against the cache (bench.prefill_media)


def build_inputs(processor: Any, kind: str, media: Any, text: str, device: torch.device,
                 audio: np.ndarray | None = None) -> Any:
    """The processed single-row inputs: the user turn ``[media, text]`` through the chat template; ``kind`` is
    ``"image"`` (a PIL image), ``"video"`` (a ``(frames, H, W, 3)`` array) or ``"audio"`` (a mono waveform at the
    processor's sampling rate). ``audio``, for an audio-capable processor, adds a waveform to an image or video
    turn: ``[media, audio, text]`` (e.g. a video's own sound track, :func:`~mmaccel.eval.audio.read_audio`)."""
    content = [{"type": kind}] + ([{"type": "audio"}] if audio is not None else []) + [{"type": "text", "text": text}]
    prompt = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                           tokenize=False)
    media_inputs: dict[str, Any] = {{"image": "images", "video": "videos", "audio": "audio"}[kind]: [media]}
    if audio is not None:
        media_inputs["audio"] = [audio]
    if "audio" in media_inputs:
        media_inputs["sampling_rate"] = processor.feature_extractor.sampling_rate
    return processor(text=[prompt], return_tensors="pt", **media_inputs).to(device)


def answer(model: Any, processor: Any, inputs: Any, max_new_tokens: int, measure_memory: bool,
           media_first: bool = False) -> dict[str, Any]:
    """One greedy answer with its figures: raw output text, TTFT, TPOT, latency, new tokens, visual tokens in the
    prompt and kept, KV-cache bytes and peak memory (CUDA: measured in the same call; CPU: by a second, untimed
    call under the tensor tracker, which would distort the timing).

    With ``media_first`` the media are prefilled into the cache first (:func:`~mmaccel.bench.prefill_media`, not
    timed) and the question is read against the cache: TTFT is then the question's prefill; peak memory covers
    both."""
    device = next(model.parameters()).device
    kwargs = dict(max_new_tokens=max_new_tokens, do_sample=False, return_dict_in_generate=True)

    def generate_inputs() -> Any:
        return prefill_media(model, inputs) if media_first else inputs

    with torch.no_grad():
        if device.type == "cuda" and measure_memory:
            with track_peak_memory(device) as memory:
                out, ttft, tpot, latency = timed_generate(model, generate_inputs(), **kwargs)
            peak = memory["peak_bytes"]
        else:
            out, ttft, tpot, latency = timed_generate(model, generate_inputs(), **kwargs)
            peak = None
            if measure_memory:
                with track_peak_memory(device) as memory:
                    model.generate(**generate_inputs(), **kwargs)
                peak = memory["peak_bytes"]
    new = out.sequences[0, inputs["input_ids"].shape[1]:]
    visual, kept = visual_token_counts(model, inputs)
    return {"output": processor.tokenizer.decode(new, skip_special_tokens=True), "ttft_s": ttft, "tpot_s": tpot,
            "latency_s": latency, "new_tokens": int(new.numel()), "visual_tokens": visual,
            "visual_tokens_kept": kept, "kv_bytes": tensor_bytes(out.cache), "peak_memory_bytes": peak}


def answer_streaming(model: Any, processor: Any, frames: Any, text: str, config: StreamConfig, max_new_tokens: int,
                     measure_memory: bool) -> dict[str, Any]:
    """A video answered as a live stream would be: the frames ingested into a :func:`mmaccel.stream` session,
    then the question asked. TTFT and latency are the question's alone (the frames arrived before it); the record
    adds the ingest time per frame. Peak memory (when measured) covers ingest and answer, above the weights."""
    from ..stream import StreamSession

    device = next(model.parameters()).device
    with track_peak_memory(device) if measure_memory else nullcontext({}) as memory:
        session = StreamSession(model, processor, config)
        session.add_frames(frames)
        start = time.perf_counter()
        output = "".join(session.ask(text, max_new_tokens=max_new_tokens))
        latency = time.perf_counter() - start
    stats = session.stats()
    new_tokens = len(processor.tokenizer(output, add_special_tokens=False).input_ids)
    ttft = stats["last_ttft_s"] if stats["last_ttft_s"] is not None else latency
    return {"output": output, "ttft_s": ttft, "tpot_s": (latency - ttft) / max(1, new_tokens - 1),
            "latency_s": latency, "new_tokens": new_tokens, "visual_tokens": stats["visual_tokens_seen"],
            "visual_tokens_kept": stats["visual_tokens_kept"], "kv_bytes": stats["kv_bytes"],
            "peak_memory_bytes": memory.get("peak_bytes"), "ingest_s_per_frame": stats["ingest_s_per_frame"]}


def evaluate(model: Any, processor: Any, task: Task, samples: list[Sample], configurations: list[Configuration],
             out: Path, identity: dict[str, Any], options: RunOptions, shard: Shard | None = None
             ) -> dict[str, list[dict[str, Any]]] | None:
    """Answer every sample of this rank with every configuration, appending records under ``out``; skip what a
    previous run finished. On rank 0, returns every configuration's records from all ranks, in dataset order
    (``None`` on other ranks)."""
    from tqdm.auto import tqdm

    shard = shard or Shard()
    check_run(out, identity, create=shard.rank == 0)
    shard.barrier()
    stores = {c.name: RecordStore(out, c.name) for c in configurations}
    done = {name: store.finished(options.retry_errors) for name, store in stores.items()}
    mine = [s for s in samples if shard.owns(s) and any(s.key not in done[c.name] for c in configurations)]
    device = next(model.parameters()).device
    warmed: set[str] = set()
    try:
        bar = tqdm(mine, desc=f"{task.name} rank {shard.rank}" if shard.world_size > 1 else task.name,
                   unit="sample", disable=not options.progress, file=sys.stderr)
        for sample in bar:
            pending = [c for c in configurations if sample.key not in done[c.name]]
            base = {"key": sample.key, "index": sample.index, "answer": sample.answer, "fields": sample.fields}
            text = task.prompt(sample)
            try:
                media = sample.load_media()
                inputs = build_inputs(processor, sample.kind, media, text, device)
            except Exception as err:  # a corrupt file or one the processor rejects: record it, go on
                reason = str(err) if isinstance(err, MediaError) else f"cannot prepare the inputs ({_describe(err)})"
                for configuration in pending:
                    stores[configuration.name].append({**base, "config": configuration.name, "prompt": text,
                                                       "error": reason}, shard.rank)
                continue
            for configuration in pending:
                configuration.apply(model, processor)
                record = {**base, "config": configuration.name, "prompt": text}
                question = (sample.kind, media, inputs, text)
                try:
                    if configuration.name not in warmed:
                        for _ in range(options.warmup):
                            _respond(model, processor, configuration, question, options, measure_memory=False)
                        warmed.add(configuration.name)
                    result = _respond(model, processor, configuration, question, options, options.measure_memory)
                except Exception as err:  # e.g. out of memory on one long video: record it, go on
                    stores[configuration.name].append({**record, "error": f"generate failed ({_describe(err)})"},
                                                      shard.rank)
                    continue
                stores[configuration.name].append({**record, **result, "parsed": task.parse(result["output"]),
                                                   "error": None}, shard.rank)
    finally:
        restore(model)
        for store in stores.values():
            store.close()
    shard.barrier()
    if shard.rank != 0:
        return None
    order = {s.key: s.index for s in samples}
    merged = {}
    for configuration in configurations:
        records = [r for k, r in stores[configuration.name].read().items() if k in order]
        merged[configuration.name] = sorted(records, key=lambda r: order[r["key"]])
    return merged


def _respond(model: Any, processor: Any, configuration: Configuration, question: tuple, options: RunOptions,
             measure_memory: bool) -> dict[str, Any]:
    """One answer in ``configuration``: a stream session for a video when it streams, else ``generate``."""
    kind, media, inputs, text = question
    if configuration.streams and kind == "video":
        return answer_streaming(model, processor, media, text, configuration.config.stream, options.max_new_tokens,
                                measure_memory)
    return answer(model, processor, inputs, options.max_new_tokens, measure_memory, options.media_first)


def _describe(err: Exception) -> str:
    return f"{err.__class__.__name__}: {err}"
