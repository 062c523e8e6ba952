"""Content-addressed files under UNET3D_DATA_DIR: volumes and masks named by their sha256, written atomically.

A file appears under its final name only complete and on disk: its bytes go to a temporary file in the same folder
(`.tmp-*`), which is flushed and fsynced, renamed over the final name (atomic on POSIX) and the folder fsynced, so
that a crash at any moment leaves either no file or the whole file under that name. Identical content is stored
once. The database commits a reference only after the file is durable; a crash in between leaves an unreferenced
file, never a reference to a missing one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from unet3d.formats import GZIP_MAGIC

from ..errors import StorageUnavailableError

_CHUNK = 1 << 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
TEMP_PREFIX = ".tmp-"
# Temporary files older than this at start-up belong to a writer that died (a live one finishes in seconds).
STALE_TEMP_S = 3600.0


class FileStore:
    """Files named `objects/<sha[:2]>/<sha>.nii[.gz]` under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.objects = self.root / "objects"

    def open(self) -> None:
        """Create the folders and remove temporary files that crashed writers left behind.

        Raises:
            StorageUnavailableError: the folder cannot be created or written (e.g. a read-only UNET3D_DATA_DIR).
        """
        try:
            self.objects.mkdir(parents=True, exist_ok=True)
            _fsync_directory(self.objects.parent)
            probe = tempfile.NamedTemporaryFile(dir=self.objects, prefix=TEMP_PREFIX)  # noqa: SIM115
            probe.close()
        except OSError as e:
            raise StorageUnavailableError(
                f"cannot write to {self.root} ({e.strerror}): set UNET3D_DATA_DIR to a writable folder"
            ) from e
        self._remove_stale_temps()

    def path(self, sha256: str, suffix: str) -> Path:
        """Where the file with this digest lives (it may not exist)."""
        if not _SHA256.match(sha256) or suffix not in (".nii", ".nii.gz"):
            raise ValueError(f"not a stored file name: {sha256}{suffix}")
        return self.objects / sha256[:2] / f"{sha256}{suffix}"

    def put_file(self, source: Path) -> tuple[str, str]:
        """Store a copy of `source`; returns its sha256 and suffix (`.nii.gz` when gzipped, else `.nii`)."""
        digest = hashlib.sha256()
        with source.open("rb") as handle:
            head = handle.read(2)
            digest.update(head)
            for chunk in iter(lambda: handle.read(_CHUNK), b""):
                digest.update(chunk)
        sha, suffix = digest.hexdigest(), ".nii.gz" if head == GZIP_MAGIC else ".nii"
        if not self.path(sha, suffix).exists():
            with source.open("rb") as handle:
                self._write(sha, suffix, lambda out: shutil.copyfileobj(handle, out, _CHUNK))
        return sha, suffix

    def put_bytes(self, payload: bytes, suffix: str = ".nii.gz") -> str:
        """Store `payload`; returns its sha256."""
        sha = hashlib.sha256(payload).hexdigest()
        if not self.path(sha, suffix).exists():
            self._write(sha, suffix, lambda out: out.write(payload))
        return sha

    def _write(self, sha: str, suffix: str, fill: Callable[[IO[bytes]], object]) -> None:
        final = self.path(sha, suffix)
        folder = final.parent
        try:
            if not folder.is_dir():
                folder.mkdir(exist_ok=True)
                _fsync_directory(self.objects)
            handle = tempfile.NamedTemporaryFile(dir=folder, prefix=TEMP_PREFIX, delete=False)  # noqa: SIM115
            temp = Path(handle.name)
            try:
                with handle:
                    fill(handle)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temp, final)
            except BaseException:
                temp.unlink(missing_ok=True)
                raise
            _fsync_directory(folder)
        except OSError as e:
            raise StorageUnavailableError(f"cannot store a file under {self.root}: {e.strerror}") from e

    def _remove_stale_temps(self) -> None:
        cutoff = time.time() - STALE_TEMP_S
        for temp in self.objects.glob(f"*/{TEMP_PREFIX}*"):
            with contextlib.suppress(OSError):
                if temp.stat().st_mtime < cutoff:
                    temp.unlink()


def sha256_of(path: Path) -> str:
    """The sha256 of a file's bytes, hex."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_directory(folder: Path) -> None:
    # A rename or a new entry is durable only once the directory itself is synced (POSIX; Linux ext4/xfs).
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
