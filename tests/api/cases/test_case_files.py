"""Content-addressed files: named by their sha256, written whole or not at all, stored once."""

from __future__ import annotations

import hashlib
import os
import time

import nibabel as nib
import numpy as np
import pytest

from api.cases.files import TEMP_PREFIX, FileStore, sha256_of
from api.cases.masks import changed_voxels, class_names, encode_mask
from api.errors import StorageUnavailableError
from unet3d.io import load_volume


def test_a_file_is_stored_under_its_sha256_once(tmp_path):
    store = FileStore(tmp_path / "data")
    store.open()
    sha = store.put_bytes(b"mask bytes")
    assert sha == hashlib.sha256(b"mask bytes").hexdigest()
    path = store.path(sha, ".nii.gz")
    assert path.read_bytes() == b"mask bytes" and path.parent.name == sha[:2]
    first_inode = path.stat().st_ino
    assert store.put_bytes(b"mask bytes") == sha and path.stat().st_ino == first_inode
    assert [p for p in store.objects.rglob("*") if p.is_file()] == [path]


def test_put_file_keeps_the_suffix_of_the_content(tmp_path):
    store = FileStore(tmp_path / "data")
    store.open()
    plain = tmp_path / "v.nii"
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)), plain)
    sha, suffix = store.put_file(plain)
    assert (sha, suffix) == (sha256_of(plain), ".nii")
    assert store.path(sha, suffix).read_bytes() == plain.read_bytes()


def test_a_failed_write_leaves_no_file_under_a_final_name(tmp_path):
    store = FileStore(tmp_path / "data")
    store.open()

    def explode(handle):
        handle.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(StorageUnavailableError, match="No space left"):
        store._write("ab" * 32, ".nii.gz", explode)
    assert list(store.objects.rglob("*.nii.gz")) == [] and list(store.objects.rglob(f"{TEMP_PREFIX}*")) == []


def test_open_removes_old_temporary_files_only(tmp_path):
    store = FileStore(tmp_path / "data")
    store.open()
    (store.objects / "ab").mkdir()
    old, fresh = store.objects / "ab" / f"{TEMP_PREFIX}old", store.objects / "ab" / f"{TEMP_PREFIX}fresh"
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    store.open()
    assert not old.exists() and fresh.exists()


def test_an_unwritable_data_folder_is_reported_with_the_setting_to_change(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StorageUnavailableError, match="UNET3D_DATA_DIR"):
        FileStore(blocker / "data").open()


def test_stored_names_cannot_leave_the_store(tmp_path):
    with pytest.raises(ValueError, match="not a stored file name"):
        FileStore(tmp_path).path("../../etc/passwd", ".nii.gz")


def test_one_mask_always_encodes_to_the_same_bytes_on_the_volume_header(tmp_path):
    affine = np.diag([0.8, 0.9, 1.5, 1.0])
    affine[:3, 3] = [10, -4, 2]
    image = nib.Nifti1Image(np.zeros((6, 5, 4), np.float32), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=4)
    nib.save(image, tmp_path / "v.nii.gz")
    volume = load_volume(tmp_path / "v.nii.gz")
    mask = np.zeros((6, 5, 4), np.uint8)
    mask[1:3, 1:3, 1:3] = 2
    first = encode_mask(mask, volume)
    time.sleep(1.1)  # gzip would stamp a new mtime
    assert encode_mask(mask, volume) == first
    (tmp_path / "m.nii.gz").write_bytes(first)
    written = nib.load(tmp_path / "m.nii.gz")
    assert np.array_equal(np.asarray(written.dataobj), mask)
    assert written.header.get_qform(coded=True)[1] == 1 and written.header.get_sform(coded=True)[1] == 4
    assert np.allclose(written.affine, affine)


def test_changed_voxels_counts_what_each_class_gained_and_lost():
    parent = np.array([0, 1, 1, 2, 2, 0], np.uint8)
    child = np.array([1, 1, 2, 2, 0, 0], np.uint8)
    assert changed_voxels(parent, child) == {
        "0": {"added": 1, "removed": 1},
        "1": {"added": 1, "removed": 1},
        "2": {"added": 1, "removed": 1},
    }
    assert changed_voxels(parent, parent) == {}


def test_class_names_come_from_the_card_when_the_labels_fit():
    assert class_names(2, ["bg", "a", "b"]) == ["bg", "a", "b"]
    assert class_names(3, ["bg", "a", "b"]) == ["class_0", "class_1", "class_2", "class_3"]
    assert class_names(0, None) == ["class_0", "class_1"]
