import pytest
import transformers

import mmaccel
from mmaccel.compat import MIN_TRANSFORMERS, UnsupportedTransformersError, require_supported_transformers


def test_installed_transformers_is_supported():
    require_supported_transformers()


@pytest.mark.parametrize("version", ["5.17.0", "5.23.0", "6.0.0"])
def test_accelerate_names_the_unsupported_release_and_changes_nothing(tiny, monkeypatch, version):
    model, _ = tiny("llava")
    monkeypatch.setattr(transformers, "__version__", version)
    with pytest.raises(UnsupportedTransformersError, match=rf"found {version}.*transformers>={MIN_TRANSFORMERS},<6"):
        mmaccel.accelerate(model, "balanced")
    assert not mmaccel.is_accelerated(model)


def test_stream_session_checks_the_release(tiny, monkeypatch):
    model, processor = tiny("llava_onevision")
    monkeypatch.setattr(transformers, "__version__", "5.20.0")
    with pytest.raises(UnsupportedTransformersError, match="found 5.20.0"):
        mmaccel.stream(model, processor)


def test_pyproject_pins_the_same_floor():
    from pathlib import Path

    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert f'"transformers>={MIN_TRANSFORMERS},<6"' in pyproject
