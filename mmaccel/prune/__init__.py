"""Prefill visual-token sparsification: importance scoring by probe queries (``scoring``) and ZipVL-style dynamic
sparse attention (``dynamic``)."""

from .dynamic import DynamicSparsePrefill

__all__ = ["DynamicSparsePrefill"]
