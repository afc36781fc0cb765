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
