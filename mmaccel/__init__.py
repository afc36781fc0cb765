"""mmaccel: training-free acceleration for multimodal LLMs in HuggingFace transformers.

One call, :func:`accelerate`, patches a loaded model instance in place; the user's usual ``model.generate(...)``
then runs with the configured components. :func:`restore` undoes every patch.
"""

from pathlib import Path as _Path

# In a source checkout, kernels/, adapters/ and eval/ sit beside mmaccel/ (the installed wheel maps them to
# mmaccel.kernels, mmaccel.adapters and mmaccel.eval). Extending __path__ makes `python -m mmaccel ...` from the
# repo root resolve them the same way as an installed package does.
_repo_root = _Path(__file__).resolve().parent.parent
if (_repo_root / "pyproject.toml").is_file() and (_repo_root / "adapters" / "__init__.py").is_file():
    __path__.append(str(_repo_root))  # noqa: F821 - __path__ is defined for packages

from .compat import UnsupportedTransformersError  # noqa: E402
from .config import PRESETS, AccelConfig, ConfigError  # noqa: E402
from .patch import accelerate, get_config, is_accelerated, restore  # noqa: E402
from .stream import StreamSession, stream  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "AccelConfig",
    "ConfigError",
    "PRESETS",
    "accelerate",
    "get_config",
    "is_accelerated",
    "restore",
    "stream",
    "StreamSession",
    "UnsupportedTransformersError",
    "__version__",
]
