"""Model zoo: offline tiny random-weight models of every supported family (``mmaccel.zoo.tiny``)."""

from .tiny import build_tiny, sample_inputs, tiny_families

__all__ = ["build_tiny", "sample_inputs", "tiny_families"]
