import numpy as np
import pytest
import torch

from unet3d.errors import InvalidVolumeError
from unet3d.preprocessing import _selected, _sorted, intensity_range, normalize_minmax, pad_to_multiple, unpad


def test_normalize_clips_percentiles_and_maps_to_unit_range():
    volume = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    volume[0, 0, 0] = -1e6  # an outlier the 1st percentile clips away
    out = normalize_minmax(volume, (1.0, 99.0))
    assert out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 1.0
    assert np.count_nonzero(out == 0.0) >= 10
    assert volume[0, 0, 0] == -1e6  # the input is never modified


def test_normalize_without_percentiles_uses_min_and_max():
    volume = np.array([[[0.0, 5.0], [10.0, 2.5]]] * 2, dtype=np.float32)
    assert np.allclose(normalize_minmax(volume, None), volume / 10)


def test_mostly_constant_volume_falls_back_to_min_max_instead_of_dividing_by_zero():
    volume = np.zeros((20, 20, 20), dtype=np.float32)
    volume[10, 10, 10] = 7.0
    out = normalize_minmax(volume, (1.0, 99.0))
    assert out[10, 10, 10] == 1.0 and np.isfinite(out).all()


def test_constant_volume_is_a_clear_error():
    with pytest.raises(InvalidVolumeError, match=r"the volume is constant \(all voxels ≈ 3\)"):
        normalize_minmax(np.full((8, 8, 8), 3.0, dtype=np.float32))


@pytest.mark.parametrize("shape", [(16, 16, 16), (17, 5, 31), (1, 2, 3)])
def test_pad_then_unpad_round_trips(shape):
    volume = torch.from_numpy(np.random.default_rng(0).random(shape).astype(np.float32))
    padded, pads = pad_to_multiple(volume, 16)
    assert all(s % 16 == 0 for s in padded.shape)
    assert torch.equal(unpad(padded, pads), volume)
    assert all(before <= after <= before + 1 for before, after in pads)  # split evenly, the odd voxel after


def test_pad_handles_leading_channel_axes():
    volume = torch.ones((3, 5, 6, 7))
    padded, pads = pad_to_multiple(volume, 4)
    assert padded.shape == (3, 8, 8, 8) and pads == ((1, 2), (1, 1), (0, 1))
    assert torch.equal(padded[:, 1:6, 1:7, 0:7], volume) and padded.sum() == volume.sum()  # zeros around it
    assert unpad(padded, pads).shape == volume.shape


@pytest.mark.parametrize("size", [7, 1000, 2_500_001])
def test_percentiles_are_numpys_and_the_same_whichever_device_finds_the_order_statistics(size):
    # The host selects (numpy), a GPU sorts (torch): the same exact values, interpolated the same way, so a volume
    # normalises identically on either device (and a GPU out-of-memory retry on the CPU gives the same labels).
    volume = np.random.default_rng(size).normal(50, 20, size).astype(np.float32)
    ranks = [0, 3, size // 2, size - 1]
    assert _selected(torch.from_numpy(volume), ranks) == _sorted(torch.from_numpy(volume), ranks)
    low, high = intensity_range(torch.from_numpy(volume.reshape(1, 1, -1)), (1.0, 99.0))
    sample = volume if size <= 2_000_000 else volume[:: size // 2_000_000]
    assert [np.float32(low), np.float32(high)] == list(np.percentile(sample, (1.0, 99.0)).astype(np.float32))
