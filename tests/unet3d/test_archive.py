"""unet3d.archive: the files of a zip, a folder or a list, read in memory under caps (the hostile cases are in
tests/hostile_dicom.py; these pin the ordinary behaviour around them)."""

import io
import os
import zipfile
from pathlib import Path

import pytest

from unet3d.archive import ArchiveLimits, is_zip, read_members, shown
from unet3d.errors import UnreadableVolumeError, VolumeTooLargeError


def write_zip(path: Path, entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return path


def names(source, **limits) -> list[str]:
    return [member.name for member in read_members(source, ArchiveLimits(**limits))]


def test_a_zip_yields_every_file_at_any_depth_and_skips_hidden_and_macos_files(tmp_path: Path):
    entries = {"a/b/c/IM1": b"1", "IM2": b"22", "a/.hidden": b"x", "__MACOSX/a/._IM1": b"x", "a/.git/config": b"x"}
    archive = write_zip(tmp_path / "series.zip", entries)
    members = {member.name: member.data for member in read_members(archive)}
    assert members == {"a/b/c/IM1": b"1", "IM2": b"22"}


def test_a_stored_zip_and_a_zip_named_otherwise_are_read_by_content(tmp_path: Path):
    archive = write_zip(tmp_path / "export.bin", {"IM1": b"abc"}, zipfile.ZIP_STORED)
    assert is_zip(archive)
    assert names(archive) == ["IM1"]


def test_a_folder_is_walked_in_order_without_following_links_to_folders(tmp_path: Path):
    (tmp_path / "series" / "sub").mkdir(parents=True)
    (tmp_path / "series" / "sub" / "IM2").write_bytes(b"2")
    (tmp_path / "series" / "IM1").write_bytes(b"1")
    (tmp_path / "series" / ".DS_Store").write_bytes(b"x")
    os.symlink(tmp_path / "series", tmp_path / "series" / "loop")  # would recurse forever if followed
    assert names(tmp_path / "series") == ["IM1", "sub/IM2"]


def test_a_list_of_files_keeps_its_order_and_a_missing_file_is_named(tmp_path: Path):
    for name in ("b", "a"):
        (tmp_path / name).write_bytes(name.encode())
    assert names([tmp_path / "b", tmp_path / "a"]) == ["b", "a"]
    with pytest.raises(UnreadableVolumeError, match="cannot read 'missing'"):
        list(read_members([tmp_path / "missing"]))


def test_the_file_count_cap_applies_to_folders_and_lists_too(tmp_path: Path):
    for i in range(5):
        (tmp_path / f"IM{i}").write_bytes(b"x")
    with pytest.raises(VolumeTooLargeError, match="holds more files than the limit of 4"):
        names(tmp_path, max_files=4)
    with pytest.raises(VolumeTooLargeError, match="5 files were given, more than the limit of 4"):
        names(sorted(tmp_path.iterdir()), max_files=4)


def test_the_byte_cap_counts_inflated_sizes(tmp_path: Path):
    archive = write_zip(tmp_path / "s.zip", {"IM1": os.urandom(3000), "IM2": os.urandom(3000)})
    assert len(names(archive, max_bytes=6000)) == 2
    with pytest.raises(VolumeTooLargeError, match="add up to"):
        names(archive, max_bytes=5999)


def test_blank_slices_deflating_far_more_than_the_ratio_pass_within_a_real_series(tmp_path: Path):
    # 40 blank 512×512 int16 slices first (each deflates ~1000×), then 40 noisy ones (~1×): a real export's shape.
    entries = {f"IM{i:03d}": bytes(512 * 512 * 2) for i in range(40)}
    entries |= {f"IM{i:03d}": os.urandom(512 * 512 * 2) for i in range(40, 80)}
    archive = write_zip(tmp_path / "s.zip", entries)
    assert len(names(archive)) == 80


def test_a_damaged_entry_is_reported_by_name_without_its_folders(tmp_path: Path):
    archive = write_zip(tmp_path / "s.zip", {"Doe_Jane/IM0001": os.urandom(4000)})
    data = bytearray(archive.read_bytes())
    data[200:240] = bytes(40)  # inside the compressed bytes
    archive.write_bytes(bytes(data))
    with pytest.raises(UnreadableVolumeError, match="entry 'IM0001'") as raised:
        names(archive)
    assert "Doe_Jane" not in str(raised.value)


def test_an_invalid_deflate_stream_is_reported_as_damaged(tmp_path: Path):
    archive = write_zip(tmp_path / "s.zip", {"IM0001": os.urandom(4000)})
    data = bytearray(archive.read_bytes())
    start = 30 + len("IM0001")
    data[start : start + 8] = b"\xff" * 8  # block type 3: invalid in every deflate stream
    archive.write_bytes(bytes(data))
    with pytest.raises(UnreadableVolumeError, match="the zip is damaged"):
        names(archive)


def test_a_password_protected_zip_is_refused(tmp_path: Path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("IM1", b"x")
    data = bytearray(buffer.getvalue())
    data[6] |= 0x1  # the encryption flag, in the local header
    central = data.index(b"PK\x01\x02")
    data[central + 8] |= 0x1  # and in the index, which zipfile reads
    (tmp_path / "s.zip").write_bytes(bytes(data))
    with pytest.raises(UnreadableVolumeError, match="password-protected"):
        names(tmp_path / "s.zip")


def test_shown_keeps_the_last_component_only():
    assert shown("Doe^Jane/1234/IM0001") == "IM0001"
    assert shown("a\\b\\c\x00d") == "c_d"
    assert len(shown("x" * 500)) == 58
