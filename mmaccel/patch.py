"""Install and remove mmaccel's patches on one model instance.

``accelerate`` never touches transformers' classes: it switches the instance's attention implementation through
the official attention interface, sets plain attributes on the instance's modules and registers hooks, recording
everything in a :class:`PatchState` kept on the instance. ``restore`` undoes exactly that, so the model afterwards
computes bit-identical logits to one never patched. Calling ``accelerate`` again first restores, so patches never
stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import nn

from .adapters import ModelAdapter, get_adapter
from .attention import ATTENTION_NAME, BACKEND_ATTR, check_triton_usable, register_attention
from .compat import require_supported_transformers
from .config import AccelConfig, ConfigError

#: Attribute of the model instance that holds its :class:`PatchState`.
STATE_ATTR = "_mmaccel_state"


@dataclass
class PatchState:
    """Everything ``accelerate`` changed on one model, so that ``restore`` can undo it."""

    config: AccelConfig
    adapter: ModelAdapter
    components: list[Component] = field(default_factory=list)
    #: The model's processor, for components that write prompts of their own (``contrast="code"``).
    processor: Any = None
    #: A drafter model handed to ``accelerate`` (``spec="draft_model"``).
    drafter: Any = None
    #: Figures components report for the last generate call (visual tokens kept, acceptance, ...).
    stats: dict[str, Any] = field(default_factory=dict)


class Component(Protocol):
    """One installable piece of mmaccel (kernels, pruning, KV cache, ...)."""

    name: str

    def install(self, model: nn.Module, state: PatchState) -> None:
        """Apply this component's patches to ``model``."""

    def remove(self, model: nn.Module, state: PatchState) -> None:
        """Undo exactly what :meth:`install` did."""


class KernelsComponent:
    """Routes the language model's attention through mmaccel's kernels (Triton or the PyTorch reference)."""

    name = "kernels"

    def __init__(self, backend: str):
        self.backend = backend
        self._original: str | None = None
        self._modules: list[nn.Module] = []

    def install(self, model: nn.Module, state: PatchState) -> None:
        """Register the attention function, switch the text sub-config to it, tag each attention module."""
        if self.backend == "triton":
            check_triton_usable(next(model.parameters()).device)
        register_attention()
        adapter = state.adapter
        self._original = adapter.text_config._attn_implementation
        model.set_attn_implementation({adapter.text_config_key: ATTENTION_NAME})
        self._modules = list(adapter.attention_modules)
        for module in self._modules:
            setattr(module, BACKEND_ATTR, self.backend)

    def remove(self, model: nn.Module, state: PatchState) -> None:
        """Give the text sub-config back its original implementation and untag the modules."""
        for module in self._modules:
            if BACKEND_ATTR in module.__dict__:
                delattr(module, BACKEND_ATTR)
        if self._original is not None:
            model.set_attn_implementation({state.adapter.text_config_key: self._original})
        self._modules = []


def build_components(config: AccelConfig) -> list[Component]:
    """The components a config switches on, in installation order."""
    components: list[Component] = []
    if config.kernels.enabled:
        components.append(KernelsComponent(config.kernels.backend))
    if config.prune.method == "dynamic":
        from .prune import DynamicSparsePrefill

        components.append(DynamicSparsePrefill(config.prune))
    elif config.prune.method == "budget":
        from .prune import FixedBudgetPruning

        components.append(FixedBudgetPruning(config.prune))
    if config.kv.method == "mixed":
        from .kv.component import MixedPrecisionKV

        components.append(MixedPrecisionKV(config.kv))
    if config.spec.enabled:
        from .spec import SpeculativeDecoding

        components.append(SpeculativeDecoding(config.spec))
    if config.contrast.enabled:
        from .contrast import ContrastiveDecoding

        components.append(ContrastiveDecoding(config.contrast))
    return components


def accelerate(model: nn.Module, config: AccelConfig | dict | str | None = None, *, processor: Any = None,
               drafter: nn.Module | None = None, **overrides: Any) -> nn.Module:
    """Patch ``model`` in place with the given configuration and return it.

    ``config`` is an :class:`~mmaccel.config.AccelConfig`, a dict, a preset name or a JSON path; keyword overrides
    replace whole sections, e.g. ``accelerate(model, kernels="triton")``. ``processor`` is the model's processor,
    needed by ``contrast="code"`` (it writes a description prompt through the chat template); ``drafter`` is a
    smaller model of the same family for ``spec="draft_model"`` (instead of loading ``spec.drafter``); both are
    ignored otherwise.
    Calling it again reconfigures the model (the previous patches are removed first). Raises
    ``UnsupportedModelError`` for a model family without an adapter and ``ConfigError`` for a bad configuration,
    before anything is changed, and ``UnsupportedTransformersError`` when the installed transformers is older than
    5.24 (or 6 and newer).
    """
    require_supported_transformers()
    resolved = AccelConfig.resolve(config, **overrides)
    if resolved.contrast.method == "code" and processor is None:
        raise ConfigError("contrast='code' writes the model's description of its media into the prompt and needs "
                          "the model's processor: accelerate(model, contrast='code', processor=processor)")
    if resolved.spec.method == "draft_model" and drafter is None and not resolved.spec.drafter:
        from .spec.draft_model import DRAFTER_FOLDER, default_drafter

        if not default_drafter(model):
            raise ConfigError(f"spec='draft_model' needs a drafter: set spec.drafter to a model name or folder, pass "
                              f"accelerate(model, spec='draft_model', drafter=small_model), or train one into the "
                              f"model's folder (python -m mmaccel.spec.train_drafter --out MODEL_FOLDER/"
                              f"{DRAFTER_FOLDER})")
    if resolved.contrast.enabled and (resolved.spec.enabled or resolved.kv.enabled):
        raise ConfigError(f"contrast={resolved.contrast.method!r} does not combine with spec or kv yet (its "
                          f"contrast branch keeps a plain cache and reads every generated token once); leave "
                          f"spec='none' and kv='none'")
    if resolved.stream.enabled:
        raise ConfigError(f"stream={resolved.stream.method!r} configures mmaccel.stream(model, processor, config) "
                          f"sessions, not generate; pass it there and leave stream='none' in accelerate")
    adapter = get_adapter(model)
    if is_accelerated(model):
        restore(model)
    state = PatchState(config=resolved, adapter=adapter, processor=processor, drafter=drafter)
    # Set through object.__setattr__ semantics of nn.Module: a plain (non-Module) attribute, not a submodule.
    setattr(model, STATE_ATTR, state)
    try:
        for component in build_components(resolved):
            component.install(model, state)
            state.components.append(component)
    except BaseException:
        restore(model)
        raise
    return model


def restore(model: nn.Module) -> nn.Module:
    """Remove every mmaccel patch from ``model`` (a no-op on a model never accelerated) and return it."""
    state: PatchState | None = model.__dict__.get(STATE_ATTR)
    if state is None:
        return model
    for component in reversed(state.components):
        component.remove(model, state)
    del model.__dict__[STATE_ATTR]
    return model


def is_accelerated(model: nn.Module) -> bool:
    """Whether ``model`` currently carries mmaccel patches."""
    return STATE_ATTR in model.__dict__


def get_config(model: nn.Module) -> AccelConfig | None:
    """The configuration ``model`` was accelerated with, or ``None``."""
    state = model.__dict__.get(STATE_ATTR)
    return None if state is None else state.config


def get_state(model: nn.Module) -> PatchState | None:
    """The :class:`PatchState` of an accelerated model, or ``None``."""
    return model.__dict__.get(STATE_ATTR)
