"""Temp files: the quota an upload reserves before its first byte is written, the service's work folders, and the
start-up sweep of what a crashed run left behind.

The quota (UNET3D_TEMP_QUOTA_MB) covers what the service keeps in temp storage: the uploads being received (each
reserves its declared size, or the largest upload allowed when it declares none, until its request ends) plus what
stays on disk between requests (the UI's upload cache and its review folders, measured). An upload that would pass
it, or that would not fit on the disk, is refused before anything is written (507 + Retry-After).

Work folders are named `unet3d-<kind>-<pid>-<random>`: at start-up, one whose process no longer runs (or whose pid is
this new process's own: a container restarted) is a crash's leftover and is removed; a sibling server's is kept.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread

from unet3d.atomic import TEMPORARY_MARK

from .errors import TempStorageFullError

logger = logging.getLogger(__name__)

WORK_KINDS = ("request", "case", "ui")
_WORK_FOLDER = re.compile(r"^unet3d-(?:request|case|ui)-(?:(\d+)-)?")
_ATOMIC_LEFTOVER = re.compile(re.escape(TEMPORARY_MARK) + r"(\d+)$")
# Gradio's cache: a folder per file, named by the file's hash; `tmp…` files are uploads it was still receiving.
_GRADIO_CACHED = re.compile(r"^(?:[0-9a-f]{32,128}|tmp\w+)$")
RETRY_FULL_S = 30
MEASURE_EVERY_S = 2.0
STRAY_SWEEP_S = 600.0
UPLOAD_TTL_S = 3600  # Gradio deletes what it cached (uploads, pictures) after this long; it looks every 15 minutes


def work_folder(kind: str) -> tempfile.TemporaryDirectory[str]:
    """A private folder `unet3d-<kind>-<pid>-…` in the temp dir, removed when the `with` block ends."""
    return tempfile.TemporaryDirectory(prefix=_prefix(kind))


def make_work_folder(kind: str) -> Path:
    """A private folder `unet3d-<kind>-<pid>-…` in the temp dir that outlives the call (its owner removes it)."""
    return Path(tempfile.mkdtemp(prefix=_prefix(kind)))


def _prefix(kind: str) -> str:
    if kind not in WORK_KINDS:
        raise ValueError(f"unknown work folder kind {kind!r}")
    return f"unet3d-{kind}-{os.getpid()}-"


class TempQuota:
    """Byte reservations for uploads in flight, checked with what is kept on disk against a quota.

    Args:
        quota_bytes: the most the service's temp files may take (UNET3D_TEMP_QUOTA_MB).
        kept: folders whose files stay between requests (the UI's upload cache); `unet3d-ui-*` review folders in
            the temp dir are measured too.
    """

    def __init__(self, quota_bytes: int, kept: list[Path]) -> None:
        self.quota_bytes = quota_bytes
        self.kept = kept
        self._reserved = 0
        self._lock = threading.Lock()
        self._measured = (0, -float("inf"))  # (bytes, when)

    @property
    def reserved(self) -> int:
        return self._reserved

    def usage(self) -> int:
        """Bytes reserved by uploads in flight plus bytes kept on disk (measured at most every 2 s)."""
        return self._reserved + self._kept_bytes()

    @contextmanager
    def reserve(self, nbytes: int) -> Iterator[None]:
        """Hold `nbytes` of the quota for the duration of the block.

        Raises:
            TempStorageFullError: the quota or the disk has no room for `nbytes` more.
        """
        kept = self._kept_bytes()
        free = min((shutil.disk_usage(folder).free for folder in self._filesystems()), default=0)
        with self._lock:
            if self._reserved + kept + nbytes > self.quota_bytes:
                raise TempStorageFullError(
                    f"the server's temp storage is full ({(self._reserved + kept) / 2**20:,.0f} MiB of "
                    f"{self.quota_bytes / 2**20:,.0f} MiB in use, UNET3D_TEMP_QUOTA_MB): nothing was written; "
                    "retry after the number of seconds in the Retry-After header",
                    RETRY_FULL_S,
                )
            if self._reserved + nbytes > free:
                raise TempStorageFullError(
                    f"the server's disk has {free / 2**20:,.0f} MiB free, too little for this upload: nothing was "
                    "written; retry after the number of seconds in the Retry-After header",
                    RETRY_FULL_S,
                )
            self._reserved += nbytes
        try:
            yield
        finally:
            with self._lock:
                self._reserved -= nbytes

    def _filesystems(self) -> list[Path]:
        return [Path(tempfile.gettempdir()), *(folder for folder in self.kept if folder.is_dir())]

    def _kept_bytes(self) -> int:
        total, when = self._measured
        now = time.monotonic()
        if now - when < MEASURE_EVERY_S:
            return total
        folders = [*self.kept, *Path(tempfile.gettempdir()).glob("unet3d-ui-*")]
        total = sum(_size_of(folder) for folder in folders)
        self._measured = (total, now)
        return total


def _size_of(path: Path) -> int:
    """Bytes of the regular files under `path` (0 if it is gone: folders come and go while we walk)."""
    total = 0
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    total += _size_of(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
    except OSError:
        pass
    return total


@dataclass
class Swept:
    """What the start-up sweep removed."""

    paths: int = 0
    bytes: int = 0

    def remove(self, path: Path) -> None:
        size = _size_of(path) if path.is_dir() else path.lstat().st_size
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        self.paths, self.bytes = self.paths + 1, self.bytes + size


def remove_leftovers(*, temp_dir: Path, upload_dir: Path | None, data_dir: Path) -> Swept:
    """Remove what a crashed run left: work folders of dead processes, UI uploads (in `upload_dir`, None without
    the UI) older than `UPLOAD_TTL_S`, and half-written files (`<name>.tmp-<pid>`) in the review storage."""
    swept = Swept()
    for path in _entries(temp_dir):
        match = _WORK_FOLDER.match(path.name)
        if match and _orphaned(match.group(1)):
            swept.remove(path)
    cutoff = time.time() - UPLOAD_TTL_S
    for path in _entries(upload_dir) if upload_dir is not None else []:
        if _GRADIO_CACHED.match(path.name) and path.lstat().st_mtime < cutoff:
            swept.remove(path)
    if data_dir.is_dir():
        for path in data_dir.rglob(f"*{TEMPORARY_MARK}*"):
            match = _ATOMIC_LEFTOVER.search(path.name)
            if match and path.is_file() and _orphaned(match.group(1)):
                swept.remove(path)
    if swept.paths:
        logger.info("removed %d leftover temp file(s) of an earlier run (%.1f MiB)", swept.paths, swept.bytes / 2**20)
    return swept


def remove_empty_strays(upload_dir: Path, older_than_s: float) -> int:
    """Remove the empty `tmp…` files Gradio's File input leaves in its cache, one per event that takes a file (gradio
    6.31, components/file.py `_process_single_file` opens one and never uses it), once older than `older_than_s`;
    Gradio's own cache cleaning never sees them. Returns how many went."""
    cutoff, removed = time.time() - older_than_s, 0
    for path in _entries(upload_dir):
        try:
            stat = path.lstat()
        except OSError:
            continue
        if path.name.startswith("tmp") and path.is_file() and stat.st_size == 0 and stat.st_mtime < cutoff:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


async def sweep_strays(upload_dir: Path, every_s: float = STRAY_SWEEP_S) -> None:
    """Every `every_s`, `remove_empty_strays` of what is older than that (runs until cancelled)."""
    while True:
        await asyncio.sleep(every_s)
        await anyio.to_thread.run_sync(remove_empty_strays, upload_dir, every_s)


def _entries(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:
        return []


def _orphaned(pid_text: str | None) -> bool:
    """Whether the process that named a file is gone (no pid: an older naming, always a leftover now)."""
    if pid_text is None:
        return True
    pid = int(pid_text)
    if pid == os.getpid():  # this process has just started: a file with its pid is a previous life's (a container)
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return False
