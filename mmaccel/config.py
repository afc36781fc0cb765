"""Typed, validated configuration: one sub-config per component, named presets, dict/JSON round-trips.

``AccelConfig`` holds one dataclass per component (``prune``, ``stream``, ``kv``, ``spec``, ``contrast``,
``kernels``). Every value is checked on construction; an unknown key or a bad value raises :class:`ConfigError`
naming the key, the value and what is allowed. A component is switched on by its primary field (``method``, or
``backend`` for kernels); components land one release at a time, so each field only allows what is implemented.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar


class ConfigError(ValueError):
    """An unknown configuration key or a value outside what is allowed."""


@dataclass
class _SubConfig:
    """Base of the component configs: validation from ``CHOICES`` and the field types."""

    #: Allowed values for enumerated fields.
    CHOICES: ClassVar[dict[str, tuple[Any, ...]]] = {}
    #: Inclusive ``(low, high)`` bounds of numeric fields.
    RANGES: ClassVar[dict[str, tuple[float, float]]] = {}
    #: The field a plain string selects (``accelerate(model, kernels="triton")``).
    PRIMARY: ClassVar[str] = "method"
    #: The section name in ``AccelConfig``.
    SECTION: ClassVar[str] = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field; raise :class:`ConfigError` on the first bad one."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            key = f"{self.SECTION}.{f.name}"
            allowed = self.CHOICES.get(f.name)
            if allowed is not None and value not in allowed:
                raise ConfigError(f"{key}={value!r} is not allowed; allowed: {', '.join(map(repr, allowed))}")
            expected = {"int": int, "float": (int, float), "bool": bool, "str": str}.get(str(f.type))
            if expected is not None and (not isinstance(value, expected) or
                                         (expected is not bool and isinstance(value, bool))):
                raise ConfigError(f"{key}={value!r} must be of type {f.type}")
            bounds = self.RANGES.get(f.name)
            if bounds is not None and not bounds[0] <= value <= bounds[1]:
                raise ConfigError(f"{key}={value!r} is out of range; allowed: {bounds[0]} to {bounds[1]}")

    @property
    def enabled(self) -> bool:
        """Whether the component does anything."""
        return getattr(self, self.PRIMARY) != "none"

    @classmethod
    def from_value(cls, value: Any) -> _SubConfig:
        """Build from a sub-config instance, a dict of fields, or a string for the primary field."""
        if isinstance(value, cls):
            return dataclasses.replace(value)
        if isinstance(value, str):
            return cls(**{cls.PRIMARY: value})
        if isinstance(value, dict):
            names = {f.name for f in dataclasses.fields(cls)}
            for key in value:
                if key not in names:
                    raise ConfigError(f"unknown key {cls.SECTION}.{key} (value {value[key]!r}); "
                                      f"allowed keys: {', '.join(sorted(names))}")
            return cls(**value)
        raise ConfigError(
            f"{cls.SECTION}={value!r} must be a {cls.__name__}, a dict of its fields, or a string for "
            f"{cls.SECTION}.{cls.PRIMARY}"
        )


def _warn_if_ignored(section: _SubConfig, settings: dict[str, Any]) -> None:
    """Warn when ``settings`` (a dict given for ``section``) change fields of a section that stays off, so nothing
    reads them: ``{"stream": {"recent_frames": 8}}`` without ``"method": "carrier"`` streams nothing."""
    if section.enabled:
        return
    defaults = type(section)()
    changed = sorted(key for key, value in settings.items()
                     if key != section.PRIMARY and value != getattr(defaults, key))
    if changed:
        allowed = [choice for choice in section.CHOICES.get(section.PRIMARY, ()) if choice != "none"]
        warnings.warn(f"{', '.join(f'{section.SECTION}.{key}' for key in changed)} set, but "
                      f"{section.SECTION}.{section.PRIMARY} is 'none', so the section is off and they do nothing; "
                      f"set {section.SECTION}.{section.PRIMARY} to one of {', '.join(map(repr, allowed))}",
                      UserWarning, stacklevel=4)


@dataclass
class KernelsConfig(_SubConfig):
    """Which attention implementation the language model uses.

    ``backend``: ``"none"`` keeps the model's own (sdpa/eager); ``"triton"`` routes attention through mmaccel's
    Triton flash-attention kernel; ``"torch"`` through its PyTorch reference; ``"auto"`` picks Triton for CUDA
    tensors and the PyTorch reference otherwise.
    """

    backend: str = "none"
    CHOICES: ClassVar = {"backend": ("none", "auto", "torch", "triton")}
    PRIMARY: ClassVar = "backend"
    SECTION: ClassVar = "kernels"


@dataclass
class PruneConfig(_SubConfig):
    """Prefill visual-token sparsification.

    ``method``:

    - ``"none"``;
    - ``"dynamic"`` (ZipVL-style dynamic sparse attention): at prefill, each layer from ``dense_layers`` on scores
      the keys with probe queries and attends only to the text and the visual tokens whose normalized scores make up
      a fraction ``tau`` of the visual tokens' total; decode is unchanged. ``tau = 1`` keeps everything;
    - ``"budget"`` (FastV-style fixed budget): layer ``prune_layer - 1`` scores the tokens the same way, and from
      layer ``prune_layer`` on only the best ``keep_ratio`` of each image's (or video's) visual tokens remain in the
      sequence, so later layers compute and cache fewer tokens.

    Probes: the last ``recent_probes`` positions (0: every position after the last visual token) and a
    ``random_probes`` fraction of the earlier ones, drawn with ``seed``.
    """

    method: str = "none"
    tau: float = 0.97
    dense_layers: int = 1
    keep_ratio: float = 0.25
    prune_layer: int = 2
    recent_probes: int = 0
    random_probes: float = 0.05
    seed: int = 0
    CHOICES: ClassVar = {"method": ("none", "dynamic", "budget")}
    RANGES: ClassVar = {"tau": (0.0, 1.0), "dense_layers": (0, 1_000_000), "keep_ratio": (0.0, 1.0),
                        "prune_layer": (1, 1_000_000), "recent_probes": (0, 1_000_000), "random_probes": (0.0, 1.0)}
    SECTION: ClassVar = "prune"


@dataclass
class StreamConfig(_SubConfig):
    """Carrier-token streaming video (``method="carrier"``), read by :func:`mmaccel.stream` sessions (not by
    ``generate``): each frame is prefilled once with one carrier token after it (the mean of the frame's visual
    embeddings); once the frame is older than the ``recent_frames`` newest, its visual tokens' KV is evicted except
    the carrier and the ``topk_tokens`` most salient; at most ``max_frames`` frames are remembered (past that, of the
    two most similar adjacent carriers the older is dropped). ``positions``: ``"compact"`` (each new token at the
    cache's length, VideoScan's choice: positions stay bounded) or ``"dense"`` (as if nothing had been evicted).
    ``fps``: frames taken per second of a video file. ``frames_per_forward``: frames prefilled together."""

    method: str = "none"
    max_frames: int = 64
    recent_frames: int = 0
    topk_tokens: int = 0
    positions: str = "compact"
    fps: float = 1.0
    frames_per_forward: int = 1
    CHOICES: ClassVar = {"method": ("none", "carrier"), "positions": ("compact", "dense")}
    RANGES: ClassVar = {"max_frames": (1, 1_000_000), "recent_frames": (0, 1_000_000),
                        "topk_tokens": (0, 100_000), "fps": (0.001, 1000.0), "frames_per_forward": (1, 1024)}
    SECTION: ClassVar = "stream"


@dataclass
class KVConfig(_SubConfig):
    """Mixed-precision KV cache (``method="mixed"``): tokens leave a full-precision window of at least ``window``
    recent tokens ``block`` at a time, packed at ``high_bits`` for the ``salient_ratio`` share with the highest
    normalized attention and at ``low_bits`` for the rest (probe queries at prefill, each new query at decode, with
    ``random_probes`` as in ``prune``).

    Trade: the defaults (4/2 bits, 60 % salient: 3.2 bits per value on average, blocks of 32) store a packed token
    in about ``1.2 * D + 8`` bytes per key/value head (codes ``0.8 * D``, per-block statistics ``0.4 * D``, per-token
    value statistics and position 8), against ``4 * D`` in float16 and ``8 * D`` in float32: 3.2x and 6.5x smaller
    at ``D = 128``. Larger blocks amortize statistics (``block=64``: about ``D + 8``) but leave up to
    ``window + block - 1`` recent tokens in full precision, which dominates on short prompts; ``window`` must stay
    at least the longest speculative draft (rollback only reaches the window). Salient tokens are chosen by the
    attention of probe queries, so accuracy suffers first where the answer needs tokens that the question did not
    attend to."""

    method: str = "none"
    high_bits: int = 4
    low_bits: int = 2
    salient_ratio: float = 0.6
    window: int = 16
    block: int = 32
    random_probes: float = 0.05
    CHOICES: ClassVar = {"method": ("none", "mixed"), "high_bits": (2, 4, 8), "low_bits": (2, 4, 8)}
    RANGES: ClassVar = {"salient_ratio": (0.0, 1.0), "window": (1, 1_000_000), "block": (1, 1_000_000),
                        "random_probes": (0.0, 1.0)}
    SECTION: ClassVar = "kv"


@dataclass
class SpecConfig(_SubConfig):
    """Lossless speculative decoding through ``generate`` (batch 1): a drafter proposes up to ``num_tokens`` tokens
    and the model verifies them in one forward (transformers' assisted decoding: greedy output equal to the model's,
    sampling distribution-preserving). ``method="prompt_lookup"``: the continuation of the latest earlier
    occurrence of the last ``min_ngram`` to ``max_ngram`` tokens, in the prompt's text and the answer so far.
    ``method="draft_head"``: an MSD-style draft head (:mod:`mmaccel.spec.draft_head`) read from the folder ``head``
    (default: the model's own folder, where the bundled models keep theirs). ``method="draft_model"``: a smaller
    model of the same family that sees the media too (:mod:`mmaccel.spec.draft_model`), loaded from ``drafter`` (a
    bundled name, a folder or a Hub id; default: the ``drafter`` folder inside the model's own folder, where the
    bundled ``shapes-image`` keeps one) unless ``accelerate(..., drafter=model)`` hands one over."""

    method: str = "none"
    num_tokens: int = 8
    max_ngram: int = 3
    min_ngram: int = 1
    head: str = ""
    drafter: str = ""
    CHOICES: ClassVar = {"method": ("none", "prompt_lookup", "draft_head", "draft_model")}
    RANGES: ClassVar = {"num_tokens": (1, 64), "max_ngram": (1, 16), "min_ngram": (1, 16)}
    SECTION: ClassVar = "spec"

    def validate(self) -> None:
        """The field checks, and ``min_ngram <= max_ngram``."""
        super().validate()
        if self.min_ngram > self.max_ngram:
            raise ConfigError(f"spec.min_ngram={self.min_ngram} must not exceed spec.max_ngram={self.max_ngram}")


@dataclass
class ContrastConfig(_SubConfig):
    """Contrastive decoding against hallucination through ``generate``: ``(1 + alpha) l_o - alpha l_c`` with the
    adaptive plausibility constraint (keep tokens with ``p >= beta * max p``), greedy or sampled. ``method``:
    ``"vcd"`` (the image noised to diffusion step ``noise_step``, VCD's defaults), ``"avisc"`` (only the blind
    visual tokens — those the prompt's last token attends to far more than to the rest, in the layers that attend
    most to the media — keep their embeddings; ``blind_layers`` is AvisC's share of media attention that picks the
    layers, ``blind_lambda`` its threshold in standard deviations), ``"code"`` (CODE: the model's own description
    of its media, at most ``description_tokens`` tokens answering ``description_prompt`` — empty: "Describe the
    image." or video, audio — in their place; the strength ``alpha (1 - D)`` and the cutoff ``D`` follow each
    step's bounded divergence ``D`` of the two branches with exponent ``code_exponent``, so ``beta`` is unused;
    needs ``accelerate(..., processor=processor)``; batch 1), ``"no_image"`` (the prompt without its media;
    batch 1), ``"mask_visual"`` / ``"mask_audio"`` (the same prompt with its visual / audio embeddings zeroed: the
    audio/visual contrast of an audio-visual model) or ``"fork_merge"`` (audio-visual models, not a logit contrast:
    the first ``fork_layers`` decoder layers run once on the audio-masked and once on the visual-masked prompt and
    their states are merged, ``alpha`` weighing the merge against the unforked state; 0 picks a quarter of the
    layers; batch 1). Steps whose distribution has entropy under ``entropy_threshold`` nats skip the contrast
    branch (0: never skip). With ``batched``, a branch with the prompt's token layout (vcd, avisc, mask_*; batch 1)
    decodes as a second row of the main forward once its prefill has run, every step (the entropy gate then only
    chooses the logits): nearly free on a GPU, where decoding is memory-bound."""

    method: str = "none"
    alpha: float = 1.0
    beta: float = 0.1
    noise_step: int = 500
    blind_layers: float = 0.5
    blind_lambda: float = 1.0
    description_tokens: int = 64
    description_prompt: str = ""
    code_exponent: float = 0.7
    fork_layers: int = 0
    batched: bool = True
    entropy_threshold: float = 0.0
    seed: int = 0
    CHOICES: ClassVar = {"method": ("none", "vcd", "avisc", "code", "no_image", "mask_visual", "mask_audio",
                                    "fork_merge")}
    RANGES: ClassVar = {"alpha": (0.0, 100.0), "beta": (1e-6, 1.0), "noise_step": (0, 999),
                        "blind_layers": (1e-6, 1.0), "blind_lambda": (-10.0, 10.0), "description_tokens": (1, 4096),
                        "code_exponent": (1e-3, 10.0), "fork_layers": (0, 1000), "entropy_threshold": (0.0, 100.0)}
    SECTION: ClassVar = "contrast"


_SECTIONS: dict[str, type[_SubConfig]] = {
    "prune": PruneConfig,
    "stream": StreamConfig,
    "kv": KVConfig,
    "spec": SpecConfig,
    "contrast": ContrastConfig,
    "kernels": KernelsConfig,
}


@dataclass
class AccelConfig:
    """The whole mmaccel configuration: one sub-config per component."""

    prune: PruneConfig = field(default_factory=PruneConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    kv: KVConfig = field(default_factory=KVConfig)
    spec: SpecConfig = field(default_factory=SpecConfig)
    contrast: ContrastConfig = field(default_factory=ContrastConfig)
    kernels: KernelsConfig = field(default_factory=KernelsConfig)

    def __post_init__(self) -> None:
        for name, cls in _SECTIONS.items():
            setattr(self, name, cls.from_value(getattr(self, name)))

    # -- construction -------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AccelConfig:
        """Build from a dict such as :meth:`to_dict` returns; a ``"preset"`` key starts from that preset."""
        if not isinstance(data, dict):
            raise ConfigError(f"a config must be a dict of sections, got {type(data).__name__}")
        data = dict(data)
        base = cls.preset(data.pop("preset")) if "preset" in data else cls()
        return base.updated(**data)

    @classmethod
    def from_json(cls, text: str) -> AccelConfig:
        """Build from a JSON string."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"config is not valid JSON: {err}") from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> AccelConfig:
        """Read a JSON config file."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        return cls.from_json(path.read_text())

    @classmethod
    def preset(cls, name: str) -> AccelConfig:
        """A named preset (see :data:`PRESETS`)."""
        if name not in PRESETS:
            raise ConfigError(f"preset={name!r} is not a known preset; allowed: {', '.join(PRESETS)}")
        return cls.from_dict(PRESETS[name]["config"])

    @classmethod
    def resolve(cls, config: AccelConfig | dict | str | Path | None = None, **overrides: Any) -> AccelConfig:
        """Turn what a user passed to ``accelerate`` into a validated config.

        ``config`` may be ``None`` (preset ``"none"``), an :class:`AccelConfig`, a dict, a preset name, or a path to a
        JSON file; ``overrides`` replace whole sections (``kernels="triton"``, ``prune={"method": ...}``).
        """
        if config is None:
            base = cls()
        elif isinstance(config, AccelConfig):
            base = dataclasses.replace(config)
        elif isinstance(config, dict):
            base = cls.from_dict(config)
        elif isinstance(config, Path) or (isinstance(config, str) and config.endswith(".json")):
            base = cls.load(config)
        elif isinstance(config, str):
            base = cls.preset(config)
        else:
            raise ConfigError(
                f"config={config!r} must be None, an AccelConfig, a dict, a preset name "
                f"({', '.join(PRESETS)}) or a path to a .json file"
            )
        return base.updated(**overrides)

    def updated(self, **sections: Any) -> AccelConfig:
        """A copy with the given sections replaced; each value as accepted by the section's ``from_value``."""
        for key, value in sections.items():
            if key not in _SECTIONS:
                raise ConfigError(f"unknown config key {key!r} (value {value!r}); allowed: {', '.join(_SECTIONS)}")
        current = {name: getattr(self, name) for name in _SECTIONS}
        for key, value in sections.items():
            settings = {}
            if isinstance(value, dict):
                # A dict updates the section field by field rather than resetting the fields it does not name.
                settings, value = value, {**dataclasses.asdict(current[key]), **value}
            current[key] = _SECTIONS[key].from_value(value)
            _warn_if_ignored(current[key], settings)
        return AccelConfig(**current)

    # -- serialisation ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, dict[str, Any]]:
        """A plain dict, one entry per section; ``AccelConfig.from_dict(c.to_dict()) == c``."""
        return {name: dataclasses.asdict(getattr(self, name)) for name in _SECTIONS}

    def to_json(self, indent: int | None = 2) -> str:
        """The config as JSON text."""
        return json.dumps(self.to_dict(), indent=indent)

    def enabled_components(self) -> list[str]:
        """Names of the sections that are switched on."""
        return [name for name in _SECTIONS if getattr(self, name).enabled]


#: Named presets. Each has a one-line description of what it trades, shown by ``mmaccel presets``.
PRESETS: dict[str, dict[str, Any]] = {
    "none": {
        "description": "Nothing changed: the model exactly as loaded (the baseline of every comparison).",
        "config": {},
    },
    "kernels": {
        "description": "mmaccel's flash-attention kernel for the language model (Triton on CUDA, PyTorch elsewhere); "
                       "lossless up to floating-point rounding.",
        "config": {"kernels": {"backend": "auto"}},
    },
    "balanced": {
        "description": "ZipVL-style: dynamic sparse prefill (tau 0.97, first layer dense: each layer attends only to "
                       "the visual tokens that carry 97% of the probes' attention) and a mixed-precision KV cache "
                       "for decode (salient 60% of tokens at 4 bits, the rest at 2, the last 16-47 tokens in full "
                       "precision); small accuracy cost, a several times smaller cache.",
        "config": {"prune": {"method": "dynamic"}, "kv": {"method": "mixed"}},
    },
    "speculative": {
        "description": "Lossless speculative decoding (batch 1): prompt-lookup drafts of up to 8 tokens verified in "
                       "one forward; the same output as the model, decode faster where answers repeat the prompt or "
                       "themselves.",
        "config": {"spec": {"method": "prompt_lookup"}},
    },
    "speculative_head": {
        "description": "Lossless speculative decoding (batch 1) with an MSD-style draft head: one decoder layer over "
                       "the model's last hidden state drafts up to 8 tokens, verified in one forward; the same "
                       "output as the model. Needs draft_head.safetensors beside the model (the bundled models have "
                       "one; python -m mmaccel.spec.train trains one).",
        "config": {"spec": {"method": "draft_head"}},
    },
    "speculative_drafter": {
        "description": "Lossless speculative decoding (batch 1) with a small model of the same family as the drafter, "
                       "reading the image or video with its own encoders; the same output as the model. Uses the "
                       "drafter/ folder beside the model (the bundled shapes-image has one; python -m "
                       "mmaccel.spec.train_drafter makes one), or spec.drafter.",
        "config": {"spec": {"method": "draft_model"}},
    },
    "stream": {
        "description": "For mmaccel.stream sessions, the demo and eval of videos: VideoScan-style carrier tokens; "
                       "once a frame is prefilled only its carrier token stays in the cache, at most 64 frames "
                       "remembered: memory bounded whatever the stream's length, answers that need no prefill of "
                       "the video, at an accuracy cost that is large on models not trained for carriers "
                       "(topk_tokens and recent_frames keep more of each frame).",
        "config": {"stream": {"method": "carrier"}},
    },
    "fast": {
        "description": "FastV-style fixed budget: after layer 2 only the best quarter of each image's (or video's) "
                       "visual tokens stay in the sequence; later layers compute and cache fewer tokens. Larger "
                       "accuracy cost than balanced.",
        "config": {"prune": {"method": "budget", "keep_ratio": 0.25, "prune_layer": 2}},
    },
}
