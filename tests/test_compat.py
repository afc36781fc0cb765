from pathlib import Path

import pytest

import mmaccel
from mmaccel import compat
from mmaccel.compat import MIN_TRANSFORMERS, UnsupportedTransformersError, require_supported_transformers


def _pretend_release(monkeypatch, version: str) -> None:
    # The module object mmaccel.compat reads: transformers replaces sys.modules["transformers"] with a new lazy
    # module when processing_utils is first imported, so a test's own `import transformers` may be another object.
    monkeypatch.setattr(compat.transformers, "__version__", version)


def test_installed_transformers_is_supported():
    require_supported_transformers()


@pytest.mark.parametrize("version", ["5.17.0", "5.23.0", "6.0.0"])
def test_accelerate_names_the_unsupported_release_and_changes_nothing(tiny, monkeypatch, version):
    model, _ = tiny("llava")
    _pretend_release(monkeypatch, version)
    try:
        with pytest.raises(UnsupportedTransformersError,
                           match=rf"found {version}.*transformers>={MIN_TRANSFORMERS},<6"):
            mmaccel.accelerate(model, "balanced")
        assert not mmaccel.is_accelerated(model)
    finally:
        mmaccel.restore(model)  # the model is shared with other tests


def test_stream_session_checks_the_release(tiny, monkeypatch):
    model, processor = tiny("llava_onevision")
    _pretend_release(monkeypatch, "5.20.0")
    with pytest.raises(UnsupportedTransformersError, match="found 5.20.0"):
        mmaccel.stream(model, processor)


def test_pyproject_pins_the_same_floor():
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert f'"transformers>={MIN_TRANSFORMERS},<6"' in pyproject
