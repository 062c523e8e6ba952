"""Volumes that cannot fit in memory are refused with a clear error instead of the kernel killing the process."""

import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import sphere_volume, write_nifti

from unet3d import Segmenter, UnreadableVolumeError, VolumeTooLargeError, load_volume, memory, planning
from unet3d.cli import main

SIDE = 12_000  # 1.7 TB of uint8 voxels: no machine this runs on holds the 8.6 TB that reading it takes


@pytest.fixture
def huge_nifti(tmp_path):
    """A valid .nii whose header declares SIDE³ uint8 voxels, as a sparse file: no disk space, no data to read."""
    header = nib.Nifti1Header()
    header.set_data_shape((SIDE, SIDE, SIDE))
    header.set_data_dtype(np.uint8)
    header.set_sform(np.eye(4), code=1)
    header["vox_offset"] = 352
    path = tmp_path / "huge.nii"
    with path.open("wb") as f:
        f.write(header.binaryblock + b"\0" * 4)
        f.truncate(352 + SIDE**3)
    return path


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """Point the memory probe at files the test writes, in the kernel's formats."""
    root = tmp_path / "sys"
    monkeypatch.setattr(memory, "_MEMINFO", root / "meminfo")
    monkeypatch.setattr(memory, "_CGROUP_V2", root / "cgroup2")
    monkeypatch.setattr(memory, "_CGROUP_V1", root / "cgroup1")
    for folder in ("cgroup2", "cgroup1"):
        (root / folder).mkdir(parents=True)
    return root


def _meminfo(root, available_kb, swap_free_kb=0):
    (root / "meminfo").write_text(
        f"MemTotal:       24684136 kB\nMemFree:         1000000 kB\nMemAvailable:   {available_kb} kB\n"
        f"SwapTotal:             0 kB\nSwapFree:        {swap_free_kb} kB\n"
    )


def test_available_memory_on_this_machine_is_positive_and_at_most_ram_plus_swap():
    fields = dict(line.split(":") for line in Path("/proc/meminfo").read_text().splitlines())
    total = (int(fields["MemTotal"].split()[0]) + int(fields["SwapTotal"].split()[0])) * 1024
    available = memory.available_bytes()
    assert available is not None and 0 < available <= total


def test_available_memory_is_free_ram_plus_free_swap(machine):
    _meminfo(machine, available_kb=4_000_000, swap_free_kb=1_000_000)
    assert memory.available_bytes() == 5_000_000 * 1024


def test_a_cgroup_v2_limit_caps_available_memory_and_page_cache_counts_as_free(machine):
    _meminfo(machine, available_kb=20_000_000)
    (machine / "cgroup2" / "memory.max").write_text("2147483648\n")
    (machine / "cgroup2" / "memory.current").write_text("1610612736\n")
    (machine / "cgroup2" / "memory.stat").write_text("anon 1073741824\ninactive_file 536870912\nactive_file 0\n")
    assert memory.available_bytes() == 2**31 - (1610612736 - 536870912)


def test_a_cgroup_v1_limit_caps_available_memory(machine):
    _meminfo(machine, available_kb=20_000_000)
    (machine / "cgroup1" / "memory.limit_in_bytes").write_text("1073741824\n")
    (machine / "cgroup1" / "memory.usage_in_bytes").write_text("805306368\n")
    (machine / "cgroup1" / "memory.stat").write_text("cache 0\ntotal_inactive_file 0\n")
    assert memory.available_bytes() == 2**30 - 805306368


def test_unlimited_cgroups_leave_the_machine_figure(machine):
    _meminfo(machine, available_kb=3_000_000)
    (machine / "cgroup2" / "memory.max").write_text("max\n")
    (machine / "cgroup2" / "memory.current").write_text("1000\n")
    (machine / "cgroup1" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (machine / "cgroup1" / "memory.usage_in_bytes").write_text("1000\n")
    assert memory.available_bytes() == 3_000_000 * 1024


def test_nothing_readable_means_unknown_and_no_refusal(machine):
    assert memory.available_bytes() is None
    memory.require_memory(10**18, "anything")


def test_reading_a_volume_larger_than_memory_fails_before_any_voxel_is_read(huge_nifti):
    started = time.perf_counter()
    expected = r"reading this 12000×12000×12000 volume \(1,728.0 billion voxels\) of uint8 needs about .* GiB"
    with pytest.raises(VolumeTooLargeError, match=expected):
        load_volume(huge_nifti)
    assert time.perf_counter() - started < 5


def test_a_truncated_file_declaring_a_huge_volume_is_called_truncated_not_too_large(huge_nifti):
    with huge_nifti.open("r+b") as f:
        f.truncate(352 + 1000)
    with pytest.raises(UnreadableVolumeError, match="the file is truncated"):
        load_volume(huge_nifti)


def test_the_cli_says_the_volume_does_not_fit_and_exits_1(huge_nifti, tiny_model_dir, tmp_path, capsys):
    code = main(["predict", str(huge_nifti), "-o", str(tmp_path / "mask.nii.gz"), "--model", str(tiny_model_dir)])
    err = capsys.readouterr().err
    assert code == 1
    assert "GiB of memory, but" in err and "crop it to the region of interest or downsample it" in err
    assert not (tmp_path / "mask.nii.gz").exists()


def test_predict_refuses_a_volume_that_loads_but_cannot_be_segmented_in_what_is_left(machine, tiny_model_dir, tmp_path):
    path = write_nifti(tmp_path / "scan.nii.gz", np.tile(sphere_volume(), (4, 4, 4)))  # 96×80×64 float32
    voxels = 96 * 80 * 64
    _meminfo(machine, available_kb=planning.load_bytes(voxels, 4) // 1024 + 1)  # enough to read it, no more
    segmenter = Segmenter.from_pretrained(tiny_model_dir, device="cpu")
    assert load_volume(path).data.shape == (96, 80, 64)
    expected = r"segmenting this 96×80×64 volume \(0.5 million voxels\) needs about"
    with pytest.raises(VolumeTooLargeError, match=expected):
        segmenter.predict(path)
