"""Prefill visual-token sparsification: importance scoring by probe queries (``scoring``), ZipVL-style dynamic
sparse attention (``dynamic``) and FastV-style fixed-budget pruning (``budget``)."""

from .budget import FixedBudgetPruning
from .dynamic import DynamicSparsePrefill

__all__ = ["DynamicSparsePrefill", "FixedBudgetPruning"]
