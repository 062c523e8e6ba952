import pytest
from helpers import ROOT, TINY_CONFIG

from train.config import ConfigError, load_config


def test_shipped_configs_parse():
    for path in (ROOT / "train" / "configs").glob("*.yaml"):
        config = load_config(path)
        assert config.model.depth >= 1
        # A shipped recipe runs by steps: a clock-bound schedule would give slower machines a different model.
        assert config.loop.time_limit_min is None, path.name


def test_overrides_are_parsed_as_yaml():
    config = load_config(TINY_CONFIG, ["loop.epochs=7", "data.patch_size=[8, 8, 8]", "optim.amp=off"])
    assert config.loop.epochs == 7 and config.data.patch_size == [8, 8, 8] and config.optim.amp == "off"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("loop.epoch=3", "unknown key\\(s\\) in config.loop: epoch"),
        ("loops.epochs=3", "unknown key\\(s\\) in config: loops"),
        ("loop.epochs=three", "config.loop.epochs must be int, got 'three'"),
        ("optim.amp=fp8", "config.optim.amp must be one of auto, bf16, fp16, off, got 'fp8'"),
        ("data.patch_size=16", "config.data.patch_size must be a list"),
        ("epochs", "override must look like section.key=value"),
    ],
)
def test_unknown_keys_and_bad_values_are_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TINY_CONFIG, [override])


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.yaml")
