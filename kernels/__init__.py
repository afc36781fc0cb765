"""mmaccel's kernels (installed as ``mmaccel.kernels``): one file per op, a Triton kernel beside a PyTorch reference
with the same signature (the reference is the CPU path and the oracle in tests). Nothing here imports transformers,
and triton is only imported on the first Triton call: ``import mmaccel.kernels`` works without it."""

if __name__ == "kernels":
    # This folder sits at the root of a source checkout, and with that root on sys.path (`python -m ...` or pytest
    # run from it) `import kernels` finds it before the `kernels` distribution (Hugging Face's hub kernels) that
    # transformers imports. Load that distribution in this module's place.
    import importlib.machinery
    import importlib.util
    import os
    import sys

    _checkout_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    _other_paths = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != _checkout_root]
    _spec = importlib.machinery.PathFinder.find_spec("kernels", _other_paths)
    if _spec is None or _spec.loader is None:
        raise ImportError("`import kernels` found mmaccel's kernels/ folder of a source checkout, and no installed "
                          "`kernels` package beside it; mmaccel's kernels are `mmaccel.kernels`")
    sys.modules["kernels"] = _module = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)
else:
    from .attention import BACKENDS, attention, attention_triton, triton_available, triton_unusable_reason
    from .attention_reference import attention_reference
    from .quantized_attention import quantized_attention, quantized_attention_triton
    from .quantized_attention_reference import QuantizedSegment, quantized_attention_reference
    from .sparse_attention import sparse_attention, sparse_attention_triton
    from .sparse_attention_reference import sparse_attention_reference

    __all__ = ["BACKENDS", "QuantizedSegment", "attention", "attention_reference", "attention_triton",
               "quantized_attention", "quantized_attention_reference", "quantized_attention_triton", "sparse_attention",
               "sparse_attention_reference", "sparse_attention_triton", "triton_available", "triton_unusable_reason"]
