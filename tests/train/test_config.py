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
    with pytest.raises(ConfigError, match=r"config file not found"):
        load_config(tmp_path / "none.yaml")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.patch_size=[16, 16]", r"config.data.patch_size must be three sizes, each a multiple of 2\*\*model"),
        ("data.patch_size=[18, 18, 18]", "multiple of 2\\*\\*model.depth = 4, got \\[18, 18, 18\\]"),
        ("data.batch_size=0", "config.data.batch_size must be at least 1, got 0"),
        ("data.foreground_fraction=2", "config.data.foreground_fraction must be in \\[0, 1\\], got 2.0"),
        ("data.clip_percentiles=[99, 1]", "config.data.clip_percentiles must satisfy 0 <= low < high <= 100"),
        ("loop.validate_every=0", "config.loop.validate_every must be at least 1, got 0"),
        ("loop.validate_every=9", "exceeds loop.epochs \\(2\\): no validation would measure loop.monitor=mIoU"),
        ("loop.epochs=0", "config.loop.epochs must be at least 1, got 0"),
        ("optim.lr=-1", "config.optim.lr must be >= 0, got -1.0"),
        ("augment.gamma_range=[1.5, 0.5]", "config.augment.gamma_range must be \\[low, high\\]"),
        ("augment.noise_probability=1.5", "config.augment.noise_probability must be in \\[0, 1\\]"),
        ("augment.flip_axes=[3]", "config.augment.flip_axes must list axes among 0, 1, 2"),
        ("synth.strip_margin_mm=[4, 1]", r"config.synth.strip_margin_mm must be \[low, high\] mm with -10 <= low"),
        (
            "synth.strip_labels=mask",
            'config.synth.strip_labels must be "cut", or "mask" with synth.target=brain or brain_csf',
        ),
        ("synth.head_stripped_probability=2", "config.synth.head_stripped_probability must be in \\[0, 1\\]"),
        ("card.classes=[background]", "config.card.classes must list background \\+ classes"),
        ("card.classes=[background, 3]", "config.card.classes\\[1\\] must be a name or a mapping like"),
        ("loop.target=0.9", None),
        ("data.patch_size=x: [", "the value of override 'data.patch_size=x: \\[' is not valid YAML"),
        ("data.patch_size.x=1", "override 'data.patch_size.x=1': data.patch_size is not a mapping"),
    ],
)
def test_values_out_of_range_are_errors_before_the_run_starts(override, message):
    if message is None:  # a target with the loss as monitor means nothing
        with pytest.raises(ConfigError, match=r"loop.target applies to monitor mIoU or mDice, not loss"):
            load_config(TINY_CONFIG, [override, "loop.monitor=loss"])
        return
    with pytest.raises(ConfigError, match=message):
        load_config(TINY_CONFIG, [override])


def test_nested_overrides_reach_into_mappings_and_class_names_may_be_plain_strings():
    config = load_config(TINY_CONFIG, ["card.inference.overlap=0.5", "card.classes=[background, shell, core]"])
    assert config.card.inference == {"overlap": 0.5}
    assert [c["name"] for c in config.card.classes] == ["background", "shell", "core"]


def test_invalid_yaml_names_the_file_and_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  depth: [2\nloop:\n  epochs: 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml is not valid YAML: .*line 3"):
        load_config(path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match=r"must hold a mapping of sections"):
        load_config(path)
