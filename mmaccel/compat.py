"""The transformers releases mmaccel runs on, checked where a user first hands it a model.

transformers 5.24 renamed the cache argument of every model's forward from ``past_key_values`` to ``cache`` (and the
field of ``generate``'s output with it). mmaccel's components read and pass ``cache``. On an earlier release some
of them silently do less (on 5.17 the mixed-precision KV cache was never installed) and ``mmaccel bench`` failed
reading the output, so the version is checked instead of guessed around.
"""

from __future__ import annotations

import functools

import transformers
from packaging.version import Version

#: The oldest transformers release whose models take ``cache=`` (keep in step with pyproject.toml).
MIN_TRANSFORMERS = "5.24"
#: The first release mmaccel does not claim to support.
MAX_TRANSFORMERS_EXCLUSIVE = "6"


class UnsupportedTransformersError(RuntimeError):
    """The installed transformers release is outside the range mmaccel supports."""


@functools.cache
def _unsupported_reason(version: str) -> str | None:
    found = Version(version)
    if Version(MIN_TRANSFORMERS) <= found < Version(MAX_TRANSFORMERS_EXCLUSIVE):
        return None
    return (f"mmaccel needs transformers >={MIN_TRANSFORMERS},<{MAX_TRANSFORMERS_EXCLUSIVE}, found {version}"
            + (f" (models take their cache as `cache=` from {MIN_TRANSFORMERS} on)"
               if found < Version(MIN_TRANSFORMERS) else "")
            + f"; install a supported release: pip install 'transformers>={MIN_TRANSFORMERS},"
              f"<{MAX_TRANSFORMERS_EXCLUSIVE}'")


def require_supported_transformers() -> None:
    """Raise :class:`UnsupportedTransformersError`, naming the installed and the supported releases, unless the
    installed transformers is one mmaccel supports."""
    reason = _unsupported_reason(transformers.__version__)
    if reason is not None:
        raise UnsupportedTransformersError(reason)
