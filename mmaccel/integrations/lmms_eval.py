"""An lmms-eval model backed by mmaccel: any model ``mmaccel`` can load, accelerated with a preset or config.

Where lmms-eval is installed (``pip install lmms-eval``; it is not a dependency of mmaccel), installing mmaccel
registers the model ``mmaccel`` through the ``lmms_eval.models`` entry point::

    lmms-eval --model mmaccel --model_args pretrained=llava-hf/llava-1.5-7b-hf,preset=kernels --tasks pope

``model_args``: ``pretrained`` (a name ``mmaccel bench`` accepts, a local directory or a Hub id; default
``shapes-image``), ``preset`` or ``config`` (a JSON file), ``device`` (default ``auto``), ``dtype`` (default
``auto``), ``frames`` (frames sampled from each video, default 32). It is a "simple" lmms-eval model: one request
at a time, greedy unless the task asks otherwise, generation cut at the task's ``until`` strings.

From Python, without the entry point: ``lmms_eval.evaluator.simple_evaluate(model=MMAccelLMM(...), tasks=[...])``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

try:  # lmms-eval is optional: without it the class still works as a plain object (the tests use it so)
    from lmms_eval.api.model import lmms as _Base
except ImportError:  # pragma: no cover - depends on the environment
    _Base = object

#: The generate() options lmms-eval passes that transformers understands.
_GENERATE_KEYS = ("max_new_tokens", "temperature", "top_p", "num_beams", "do_sample")


class MMAccelLMM(_Base):
    """lmms-eval "simple" model: ``generate_until`` answers each request with the accelerated model."""

    is_simple = True

    def __init__(self, pretrained: str = "shapes-image", preset: str | None = None, config: str | None = None,
                 device: str = "auto", dtype: str = "auto", frames: int = 32, batch_size: int = 1,
                 **unused: Any) -> None:
        import torch

        from ..models import load_model, resolve_dtype
        from ..patch import accelerate

        if _Base is not object:
            super().__init__()
        if int(batch_size) != 1:
            raise ValueError(f"batch_size={batch_size} is not supported by the mmaccel lmms-eval model; allowed: 1")
        self.task_dict: dict = getattr(self, "task_dict", {})
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   ("cpu" if device == "auto" else device))
        self.model, self.processor = load_model(pretrained, device=self.device,
                                                dtype=resolve_dtype(dtype, self.device))
        self.frames = int(frames)
        if config or (preset and preset != "none"):
            accelerate(self.model, config or preset, processor=self.processor)

    def generate_until(self, requests: list[Any]) -> list[str]:
        """One answer per request, in order. Each request's ``args`` are ``(context, gen_kwargs, doc_to_visual,
        doc_id, task, split)``, as lmms-eval passes them to simple models."""
        answers = []
        for request in requests:
            context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            visuals = doc_to_visual(self.task_dict[task][split][doc_id])
            answers.append(self.answer(context, visuals, dict(gen_kwargs)))
        return answers

    def answer(self, context: str, visuals: list[Any], gen_kwargs: dict[str, Any]) -> str:
        """The model's answer to ``context`` about ``visuals`` (PIL images, or a video path), cut at ``until``."""
        import torch

        from ..eval.runner import build_inputs
        from ..eval.video import read_frames

        if not visuals:
            raise ValueError("the mmaccel lmms-eval model needs one image or video per request; got none")
        if len(visuals) > 1:
            raise ValueError(f"the mmaccel lmms-eval model takes one image or video per request; got {len(visuals)}")
        visual = visuals[0]
        if isinstance(visual, (str, Path)):
            kind, media = "video", read_frames(Path(visual), self.frames)
        else:
            kind, media = "image", visual.convert("RGB")
        inputs = build_inputs(self.processor, kind, media, context, self.device)
        until = gen_kwargs.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        kwargs = {k: gen_kwargs[k] for k in _GENERATE_KEYS if k in gen_kwargs}
        kwargs.setdefault("max_new_tokens", 128)
        if not kwargs.get("temperature"):
            kwargs.pop("temperature", None)
            kwargs.pop("top_p", None)
            kwargs["do_sample"] = False
        with torch.no_grad():
            out = self.model.generate(**inputs, **kwargs)
        text = self.processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        for stop in until:
            if stop:
                text = text.split(stop)[0]
        return text

    def loglikelihood(self, requests: list[Any]) -> list[Any]:
        """Not supported: mmaccel accelerates generation."""
        raise NotImplementedError("the mmaccel lmms-eval model only generates (generate_until)")

    def generate_until_multi_round(self, requests: list[Any]) -> list[str]:
        """Not supported: one round per request."""
        raise NotImplementedError("the mmaccel lmms-eval model answers one round per request")


def manifest() -> Any:
    """The lmms-eval registration of ``MMAccelLMM`` as model ``mmaccel`` (the entry point calls this)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="mmaccel", simple_class_path="mmaccel.integrations.lmms_eval.MMAccelLMM")
