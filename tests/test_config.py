"""AccelConfig: validation errors name key, value and what is allowed; presets; dict/JSON round-trips."""

import json

import pytest

from mmaccel import PRESETS, AccelConfig, ConfigError
from mmaccel.config import KernelsConfig


def test_default_is_everything_off():
    config = AccelConfig()
    assert config.enabled_components() == []
    assert config == AccelConfig.preset("none")


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_round_trip_through_dict_and_json(name):
    config = AccelConfig.preset(name)
    assert AccelConfig.from_dict(config.to_dict()) == config
    assert AccelConfig.from_json(config.to_json()) == config
    assert json.loads(config.to_json()) == config.to_dict()


def test_string_shorthand_sets_the_primary_field():
    config = AccelConfig.resolve(kernels="triton")
    assert config.kernels == KernelsConfig(backend="triton")
    assert config.enabled_components() == ["kernels"]


def test_dict_override_keeps_unnamed_fields_and_preset_key_is_a_base():
    config = AccelConfig.from_dict({"preset": "kernels"})
    assert config.kernels.backend == "auto"
    assert AccelConfig.resolve("kernels", kernels={"backend": "torch"}).kernels.backend == "torch"


def test_bad_value_names_key_value_and_allowed():
    with pytest.raises(ConfigError) as err:
        AccelConfig.resolve(kernels="cuda-magic")
    message = str(err.value)
    assert "kernels.backend" in message and "'cuda-magic'" in message and "'triton'" in message


def test_unknown_section_and_unknown_field_are_named():
    with pytest.raises(ConfigError, match=r"unknown config key 'prunes'.*allowed: prune"):
        AccelConfig.resolve(prunes="dynamic")
    with pytest.raises(ConfigError, match=r"unknown key kernels\.bakend .*allowed keys: backend"):
        AccelConfig.from_dict({"kernels": {"bakend": "torch"}})


def test_wrong_type_is_rejected():
    with pytest.raises(ConfigError, match=r"kernels\.backend=3"):
        AccelConfig.resolve(kernels={"backend": 3})


def test_unknown_preset_lists_presets():
    with pytest.raises(ConfigError, match=r"preset='turbo'.*allowed: none, kernels"):
        AccelConfig.preset("turbo")


def test_components_not_yet_available_are_refused_with_what_is_allowed():
    with pytest.raises(ConfigError, match=r"prune\.method='fixed' is not allowed; allowed: 'none', 'dynamic'"):
        AccelConfig.resolve(prune="fixed")
    with pytest.raises(ConfigError, match=r"spec\.method='small_vlm' is not allowed; allowed: 'none', "
                                          r"'prompt_lookup', 'draft_head', 'draft_model'"):
        AccelConfig.resolve(spec="small_vlm")
    with pytest.raises(ConfigError, match=r"contrast\.method='dola' is not allowed; allowed: 'none', 'vcd', "
                                          r"'avisc', 'code', 'no_image', 'mask_visual', 'mask_audio', 'fork_merge'"):
        AccelConfig.resolve(contrast="dola")
    with pytest.raises(ConfigError, match=r"spec\.min_ngram=3 must not exceed spec\.max_ngram=2"):
        AccelConfig.resolve(spec={"method": "prompt_lookup", "min_ngram": 3, "max_ngram": 2})


def test_numeric_fields_are_range_checked():
    assert AccelConfig.resolve(prune={"method": "dynamic", "tau": 0.9}).prune.tau == 0.9
    with pytest.raises(ConfigError, match=r"prune\.tau=1\.5 is out of range; allowed: 0\.0 to 1\.0"):
        AccelConfig.resolve(prune={"method": "dynamic", "tau": 1.5})
    with pytest.raises(ConfigError, match=r"prune\.dense_layers=-1 is out of range"):
        AccelConfig.resolve(prune={"dense_layers": -1})


def test_load_reads_json_file_and_reports_missing(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"kernels": {"backend": "torch"}}))
    assert AccelConfig.resolve(str(path)).kernels.backend == "torch"
    with pytest.raises(ConfigError, match="does not exist"):
        AccelConfig.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        AccelConfig.load(tmp_path / "bad.json")


def test_config_is_a_value_error_for_callers_that_catch_those():
    assert issubclass(ConfigError, ValueError)


def test_settings_of_a_section_left_off_are_warned_about():
    import warnings

    import pytest

    from mmaccel.config import AccelConfig

    with pytest.warns(UserWarning, match=r"stream.recent_frames set, but stream.method is 'none'.*'carrier'"):
        off = AccelConfig.from_dict({"stream": {"recent_frames": 8}})
    assert not off.stream.enabled
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        on = AccelConfig.from_dict({"stream": {"method": "carrier", "recent_frames": 8}})
        AccelConfig.from_dict(on.to_dict())
        AccelConfig.from_dict(AccelConfig().to_dict())  # a round trip of sections at their defaults says nothing
