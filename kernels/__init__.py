"""mmaccel's kernels (installed as ``mmaccel.kernels``): one file per op, a Triton kernel beside a PyTorch reference
with the same signature. Nothing here imports transformers."""

from .attention import BACKENDS, attention, attention_triton, triton_available
from .attention_reference import attention_reference

__all__ = ["BACKENDS", "attention", "attention_reference", "attention_triton", "triton_available"]
