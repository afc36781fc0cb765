"""mmaccel's kernels (installed as ``mmaccel.kernels``): one file per op, a Triton kernel beside a PyTorch reference
with the same signature (the reference is the CPU path and the oracle in tests). Nothing here imports transformers,
and triton is only imported on the first Triton call: ``import mmaccel.kernels`` works without it."""

from .attention import BACKENDS, attention, attention_triton, triton_available, triton_unusable_reason
from .attention_reference import attention_reference
from .quantized_attention import quantized_attention, quantized_attention_triton
from .quantized_attention_reference import QuantizedSegment, quantized_attention_reference
from .sparse_attention import sparse_attention, sparse_attention_triton
from .sparse_attention_reference import sparse_attention_reference

__all__ = ["BACKENDS", "QuantizedSegment", "attention", "attention_reference", "attention_triton",
           "quantized_attention", "quantized_attention_reference", "quantized_attention_triton", "sparse_attention",
           "sparse_attention_reference", "sparse_attention_triton", "triton_available", "triton_unusable_reason"]
