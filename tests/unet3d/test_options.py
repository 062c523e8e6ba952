"""Options: one rule per option, each message naming the value and what is allowed."""

import numpy as np
import pytest

from unet3d.errors import ParameterError
from unet3d.options import (
    BLENDINGS,
    MODES,
    NORMS,
    PRECISIONS,
    check_choice,
    check_clip_percentiles,
    check_overlap,
    check_pad_multiple,
    check_patch_size,
    check_threshold,
    check_window,
    resolve_threshold,
)


def test_value_lists_come_from_the_literals():
    assert MODES == ("auto", "whole", "sliding")
    assert PRECISIONS == ("auto", "fp32", "bf16", "fp16")
    assert BLENDINGS == ("gaussian", "constant")
    assert NORMS == ("batch", "instance", "none")


def test_a_choice_outside_the_list_names_the_list_and_the_value():
    assert check_choice("whole", MODES, "mode") == "whole"
    with pytest.raises(ParameterError, match="mode must be one of auto, whole, sliding, got 'fast'"):
        check_choice("fast", MODES, "mode")
    with pytest.raises(ParameterError, match=r"inference\.blending must be one of gaussian, constant, got 3"):
        check_choice(3, BLENDINGS, "inference.blending")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (1.5, r"threshold must be in \(0, 1\), got 1.5"),
        (0.0, r"threshold must be in \(0, 1\), got 0.0"),
        (float("nan"), r"threshold must be in \(0, 1\), got nan"),
        ("0.5", r"threshold must be a number in \(0, 1\), got '0.5'"),
        (True, r"threshold must be a number in \(0, 1\), got True"),
    ],
)
def test_thresholds_outside_the_open_unit_interval_are_refused(value, message):
    with pytest.raises(ParameterError, match=message):
        check_threshold(value)


def test_a_threshold_is_a_float_and_applies_to_binary_models_only():
    assert check_threshold(None) is None and check_threshold(np.float32(0.25)) == 0.25
    assert resolve_threshold(None, 1) == resolve_threshold(None, 2) == 0.5
    assert resolve_threshold(0.3, 2) == 0.3 and resolve_threshold(None, 3) is None
    with pytest.raises(ParameterError, match=r"most probable class: leave threshold out$"):
        resolve_threshold(0.5, 3)
    message = r"UNET3D_DEFAULT_THRESHOLD applies to binary models only; this model has 4 classes .*: unset it$"
    with pytest.raises(ParameterError, match=message):
        resolve_threshold(0.3, 4, "UNET3D_DEFAULT_THRESHOLD", remedy="unset it")


@pytest.mark.parametrize("value", [1.0, -0.1, "0.2", None])
def test_overlap_is_a_fraction_in_the_half_open_unit_interval(value):
    if value is None:
        assert check_overlap(None) is None
        return
    with pytest.raises(ParameterError, match=rf"inference.overlap must be a number in \[0, 1\), got {value!r}"):
        check_overlap(value, "inference.overlap")


def test_clip_percentiles_are_two_ordered_numbers_within_0_and_100():
    assert check_clip_percentiles([1, 99]) == (1.0, 99.0) and check_clip_percentiles(None) is None
    with pytest.raises(ParameterError, match=r"clip_percentiles must satisfy 0 <= low < high <= 100, got \[99, 1\]"):
        check_clip_percentiles([99, 1])
    with pytest.raises(ParameterError, match=r"must be two numbers like \[1, 99\] or null \(no clipping\), got 5"):
        check_clip_percentiles(5)
    with pytest.raises(ParameterError, match=r"data.clip_percentiles must be two numbers like \[1, 99\], got None"):
        check_clip_percentiles(None, "data.clip_percentiles", optional=False)


def test_pad_multiple_is_a_positive_integer_and_a_multiple_of_the_networks():
    assert check_pad_multiple(32, 16) == 32
    with pytest.raises(ParameterError, match="pad_multiple must be a positive integer, got 0"):
        check_pad_multiple(0)
    with pytest.raises(ParameterError, match=r"pad_multiple must be a positive integer, got 8\.0"):
        check_pad_multiple(8.0)
    with pytest.raises(ParameterError, match=r"input.pad_to_multiple \(24\) must be a multiple of 2\*\*depth = 16"):
        check_pad_multiple(24, 16, "input.pad_to_multiple")


def test_patch_size_is_one_size_or_three_each_a_multiple_of_the_pad_multiple():
    assert check_patch_size(8, 4) == (8, 8, 8)
    assert check_patch_size([8.0, 12, 16], 4) == (8, 12, 16)
    with pytest.raises(
        ParameterError, match=r"patch_size must be one size or three, each a multiple of 4, got \(8, 8\)"
    ):
        check_patch_size((8, 8), 4)
    with pytest.raises(ParameterError, match="each a multiple of 4, got 2"):
        check_patch_size(2, 4)  # smaller than one multiple
    for odd in (float("nan"), float("inf"), True):
        with pytest.raises(ParameterError, match="patch_size must be one size or three"):
            check_patch_size(odd, 4)
    message = r"config.data.patch_size must be three sizes, each a multiple of 2\*\*model.depth = 4, got 8"
    with pytest.raises(ParameterError, match=message):
        check_patch_size(8, 4, name="config.data.patch_size", multiple_name="2**model.depth", cube=False)


def test_window_options_are_checked_together_and_none_means_the_default():
    assert check_window("auto", None, None, 4) == (None, None)
    assert check_window("sliding", 8, 0, 4) == ((8, 8, 8), 0.0)
    with pytest.raises(ParameterError, match="mode must be one of"):
        check_window("fast", None, None, 4)
