"""Model zoo: the bundled reference models (``load``), offline tiny models of every family (``mmaccel.zoo.tiny``),
random weights of real shapes (``mmaccel.zoo.random_weights``) and the shapes world they are trained on."""

from .reference import load, reference_names
from .tiny import build_tiny, sample_inputs, tiny_families

__all__ = ["build_tiny", "load", "reference_names", "sample_inputs", "tiny_families"]
