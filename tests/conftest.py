"""Shared test setup: Triton runs under its CPU interpreter when no GPU is present; tiny models are cached."""

import os

import torch

if not torch.cuda.is_available():
    # Must happen before anything imports triton.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import functools  # noqa: E402

import pytest  # noqa: E402


@functools.cache
def _cached_tiny(family: str):
    from mmaccel.zoo.tiny import build_tiny

    return build_tiny(family, seed=0)


@pytest.fixture
def tiny():
    """``tiny(family) -> (model, processor)``: a session-cached tiny model; tests must restore what they patch."""
    return _cached_tiny


def _smaller_tiny(family: str):
    from mmaccel.zoo.tiny import build_tiny

    drafter, _ = build_tiny(family, seed=7)
    drafter.model.language_model.layers = drafter.model.language_model.layers[:1]
    drafter.config.get_text_config().num_hidden_layers = 1
    return drafter


@pytest.fixture
def smaller_tiny():
    """``smaller_tiny(family) -> model``: a same-family tiny model with other weights and one decoder layer (a
    drafter for speculative decoding), built afresh."""
    return _smaller_tiny


def _first_prefill_position_ids(module, model, inputs):
    seen = []
    handle = module.register_forward_pre_hook(lambda mod, args, kwargs: seen.append(kwargs.get("position_ids")),
                                              with_kwargs=True)
    try:
        with torch.no_grad():
            model.generate(**inputs, max_new_tokens=2, do_sample=False)
    finally:
        handle.remove()
    return seen[0]


@pytest.fixture
def prefill_position_ids():
    """``prefill_position_ids(module, model, inputs)``: the ``position_ids`` keyword ``module`` receives at the
    prefill step of ``model.generate(**inputs)``."""
    return _first_prefill_position_ids
