"""The files of an upload — a .zip, a folder or a list of paths — read into memory, with caps checked as they inflate.

Nothing is ever extracted to disk: members are inflated straight into memory, so no entry name (`../../etc/x`,
`/abs/path`, a symbolic link) can write anywhere, and there is no temp folder to clean. The bytes are needed in memory
anyway (the DICOM reader parses them). Caps: the number of entries and the sizes the zip's index declares are checked
before anything is inflated (zipfile never inflates an entry past its declared size: a lying entry fails its CRC),
and the running total is checked again after every MiB inflated: past the byte cap, or past `max_ratio` times the
archive's compressed size, the read stops. Deflated entries are inflated with ISA-L (isal) when it is installed,
with the same size and CRC checks as zipfile's: inflating is most of what reading a zipped series costs beyond
reading the files.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from .errors import UnreadableVolumeError, UnsupportedFormatError, VolumeTooLargeError
from .memory import require_memory

__all__ = ["MAX_FILES", "ZIP_MAGIC"]

_deflate: ModuleType = zlib
with contextlib.suppress(ImportError):  # ISA-L's inflate: zlib's API at ~2× its speed (isal is pinned)
    from isal import isal_zlib as _deflate

MAX_FILES = 5000  # a 0.5 mm whole-body CT is ~2000 slices; more files than this is a whole archive, not a series
MAX_RATIO = 100.0  # real scans deflate 2-10×; a bomb deflates 1000×
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header, or the end record of an empty archive
_CHUNK_BYTES = 1 << 20
_RATIO_SLACK_BYTES = 1 << 20  # a few small blank slices deflate far more than MAX_RATIO: let the first MiB pass
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass
class Member:
    """One file of an upload, in memory.

    Attributes:
        name: its path inside the archive or below the folder, for messages (never opened as a path).
        data: its bytes; the reader drops them (None) once decoded.
    """

    name: str
    data: bytes | None


@dataclass(frozen=True)
class ArchiveLimits:
    """Caps on what an upload may unpack to.

    Attributes:
        max_files: files (not folders) in a zip or below a folder.
        max_bytes: their total size once inflated; None: only the memory available limits it.
        max_ratio: inflated bytes per compressed byte, over the whole zip.
    """

    max_files: int = MAX_FILES
    max_bytes: int | None = None
    max_ratio: float = MAX_RATIO


def is_zip(path: str | Path) -> bool:
    """Whether `path` is a file that starts like a zip archive (its name does not matter)."""
    try:
        with Path(path).open("rb") as handle:
            return handle.read(4) in ZIP_MAGIC
    except OSError:
        return False


def shown(name: str) -> str:
    """A member name for messages: its last component only (export folders are often named after the patient)."""
    base = _UNSAFE.sub("_", name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1])
    return base if len(base) <= 60 else f"{base[:57]}…"


def read_members(source: str | Path | Sequence[str | Path], limits: ArchiveLimits | None = None) -> Iterator[Member]:
    """Every regular file of a zip, a folder (recursively) or a list of files, in memory, in order.

    Hidden files (`.name`) and macOS resource forks (`__MACOSX/`) are skipped; everything else is yielded for
    the caller to judge by content. Members are read (inflated) one at a time as the caller iterates, so it can
    drop each one's bytes before the next is read; every check on names, counts and declared sizes runs first,
    when this is called. (A reading thread ahead of the caller was measured slower: the GIL convoy of a thread that
    re-enters Python after each zlib call costs more than the overlap gains.)

    Raises:
        UnreadableVolumeError: a missing file, a damaged or password-protected zip, an entry whose name points
            outside the archive (`../`, an absolute path) or that is a symbolic link.
        UnsupportedFormatError: a zip entry compressed with a method Python cannot inflate.
        VolumeTooLargeError: more files or bytes than `limits` allow, a zip that inflates more than
            `limits.max_ratio` times its size, or more bytes than the memory available.
    """
    limits = limits or ArchiveLimits()
    if isinstance(source, str | Path):
        path = Path(source)
        if path.is_dir():
            return _read_files(_folder_files(path, limits.max_files), limits, root=path)
        if is_zip(path):
            return _read_zip(path, limits)
        return _read_files([path], limits, root=None)
    return _read_files([Path(p) for p in source], limits, root=None)


def _is_skipped(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return any((part.startswith(".") and part not in (".", "..")) or part == "__MACOSX" for part in parts)


def _folder_files(folder: Path, max_files: int) -> list[Path]:
    """Regular files below `folder` (symbolic links to folders are not followed, so a loop cannot trap the walk)."""
    found: list[Path] = []
    for directory, subdirectories, files in os.walk(folder):
        subdirectories[:] = sorted(d for d in subdirectories if not _is_skipped(d))
        for name in sorted(files):
            if _is_skipped(name):
                continue
            found.append(Path(directory) / name)
            if len(found) > max_files:
                raise VolumeTooLargeError(
                    f"the folder holds more files than the limit of {max_files}: send only the folder of the one "
                    "series to segment"
                )
    return found


def _read_files(paths: list[Path], limits: ArchiveLimits, *, root: Path | None) -> Iterator[Member]:
    if len(paths) > limits.max_files:
        raise _too_many(f"{len(paths)} files were given", limits.max_files)
    sizes = []
    for path in paths:
        try:
            sizes.append(path.stat().st_size)
        except OSError as e:
            raise UnreadableVolumeError(f"cannot read '{shown(str(path))}': {e.strerror or 'no such file'}") from e
    _check_total(sum(sizes), limits.max_bytes, f"the {len(paths)} files")
    return _file_members(paths, root)


def _file_members(paths: list[Path], root: Path | None) -> Iterator[Member]:
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as e:
            raise UnreadableVolumeError(f"cannot read '{shown(str(path))}': {e.strerror or 'a read error'}") from e
        yield Member(path.relative_to(root).as_posix() if root is not None else path.name, data)


def _read_zip(path: Path, limits: ArchiveLimits) -> Iterator[Member]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise UnreadableVolumeError(
            "the file starts like a zip archive but its index cannot be read: it is truncated or damaged, so "
            "re-create the zip"
        ) from e
    try:
        entries = [info for info in archive.infolist() if not info.is_dir()]
        if len(entries) > limits.max_files:
            raise _too_many(f"the zip holds {len(entries)} files", limits.max_files)
        for info in entries:
            _check_entry(info)
        kept = [info for info in entries if not _is_skipped(info.filename)]
        declared, compressed = sum(i.file_size for i in kept), sum(i.compress_size for i in kept)
        _check_total(declared, limits.max_bytes, "the zip's files")
        inflater = _Inflater(limits, compressed)
        inflater.check(declared)  # the index alone gives most bombs away (zipfile never inflates past it)
    except BaseException:
        archive.close()
        raise
    return _zip_members(archive, kept, inflater)


def _zip_members(archive: zipfile.ZipFile, entries: list[zipfile.ZipInfo], inflater: _Inflater) -> Iterator[Member]:
    with archive:
        for info in entries:
            yield Member(info.filename, inflater.inflate(archive, info))


def _check_entry(info: zipfile.ZipInfo) -> None:
    """Refuse entries that an extracting tool would turn into writes outside its folder, or cannot read."""
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or _DRIVE.match(name) or ".." in name.split("/"):
        raise UnreadableVolumeError(
            f"the zip holds an entry whose name points outside the archive ('{_UNSAFE.sub('_', name[:80])}'): "
            "it was not made by an export tool; zip the series folder itself (e.g. `zip -r series.zip FOLDER`)"
        )
    if stat.S_ISLNK(info.external_attr >> 16):
        raise UnreadableVolumeError(
            f"the zip holds a symbolic link ('{shown(name)}'): zip the files themselves (`zip -r`, without -y)"
        )
    if info.flag_bits & 0x1:
        raise UnreadableVolumeError("the zip is password-protected: zip the series again without a password")


class _Inflater:
    """Inflates members one by one, checking the running total against the byte and ratio caps.

    The ratio is taken over the whole archive (its compressed bytes are known from the index): a series whose first
    slices are blank (deflating 1000×) passes, a bomb does not.
    """

    def __init__(self, limits: ArchiveLimits, compressed: int) -> None:
        self.limits = limits
        self.compressed = compressed
        self.inflated = 0

    def inflate(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
        try:
            if info.compress_type == zipfile.ZIP_DEFLATED and archive.filename:
                return self._inflate_deflated(archive.filename, info)
            return self._inflate_other(archive, info)
        except NotImplementedError as e:
            raise UnsupportedFormatError(
                f"the zip entry '{shown(info.filename)}' uses a compression method that cannot be read "
                f"(zip method {info.compress_type}): re-create the zip with standard deflate compression"
            ) from e
        except (zipfile.BadZipFile, zlib.error, _deflate.error, EOFError, OSError) as e:
            raise UnreadableVolumeError(
                f"the zip is damaged: entry '{shown(info.filename)}' does not inflate to what the index declares "
                "(truncated, or a bad checksum); re-create the zip"
            ) from e

    def _inflate_other(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
        """Stored, bzip2 and lzma entries, through zipfile (which stops at the declared size and checks the CRC)."""
        chunks = []
        with archive.open(info) as stream:
            while chunk := stream.read(_CHUNK_BYTES):
                self.inflated += len(chunk)
                self.check(self.inflated)
                chunks.append(chunk)
        return b"".join(chunks)

    def _inflate_deflated(self, path: str, info: zipfile.ZipInfo) -> bytes:
        """A deflated entry, inflated by ISA-L when installed (about twice zlib's speed: inflating is most of the
        extra cost of reading a zipped series), with zipfile's own checks: declared size and CRC."""
        with open(path, "rb") as handle:
            handle.seek(info.header_offset)
            local = handle.read(30)
            if len(local) < 30 or local[:4] != b"PK\x03\x04":
                raise zipfile.BadZipFile("bad local file header")
            handle.seek(
                info.header_offset
                + 30
                + int.from_bytes(local[26:28], "little")
                + int.from_bytes(local[28:30], "little")
            )
            remaining = handle.read(info.compress_size)
        if len(remaining) != info.compress_size:
            raise EOFError("the entry's compressed data is cut short")
        inflater, chunks, size = _deflate.decompressobj(-15), [], 0
        while remaining and not inflater.eof:
            chunk = inflater.decompress(remaining, _CHUNK_BYTES)
            remaining = inflater.unconsumed_tail
            size += len(chunk)
            self.inflated += len(chunk)
            self.check(self.inflated)
            if size > info.file_size:
                raise zipfile.BadZipFile("the entry inflates past its declared size")
            chunks.append(chunk)
        data = b"".join(chunks)
        if size != info.file_size or zlib.crc32(data) != info.CRC:
            raise zipfile.BadZipFile("size or CRC-32 differs from the index")
        return data

    def check(self, inflated: int) -> None:
        """Refuse `inflated` bytes (so far, or declared) past the byte cap or `max_ratio` × the compressed size."""
        limit = self.limits.max_bytes
        if limit is not None and inflated > limit:
            raise VolumeTooLargeError(
                f"the zip inflates to more than the limit of {limit / 2**20:.1f} MiB, whatever its index declares: "
                "send only the series to segment (or raise the decompressed-size limit)"
            )
        if inflated > self.limits.max_ratio * self.compressed + _RATIO_SLACK_BYTES:
            raise VolumeTooLargeError(
                f"the zip inflates more than {self.limits.max_ratio:g} times its compressed size, which no scan does "
                "(a zip bomb?): zip the DICOM files of the series themselves"
            )


def _check_total(total: int, limit: int | None, what: str) -> None:
    if limit is not None and total > limit:
        raise VolumeTooLargeError(
            f"{what} add up to {total / 2**20:.1f} MiB, more than the limit of {limit / 2**20:.1f} MiB: "
            "send only the series to segment (or raise the decompressed-size limit)"
        )
    require_memory(total, f"reading {what} ({total / 2**20:.1f} MiB)")


def _too_many(what: str, limit: int) -> VolumeTooLargeError:
    return VolumeTooLargeError(
        f"{what}, more than the limit of {limit}: send only the folder of the one series to segment"
    )
