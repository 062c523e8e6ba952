"""Streaming multipart upload: the `file` field goes straight to a temp file, the byte cap is enforced while reading.

Starlette's own form parser spools the whole upload before the route runs, so a size cap checked afterwards
is a cap on nothing; this parser stops reading as soon as the cap is passed. The client's filename is kept
for display and output names only: the file on disk is always `<directory>/upload.nii[.gz]`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import anyio
from fastapi import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from unet3d.errors import UnreadableVolumeError, VolumeTooLargeError
from unet3d.io import check_suffix
from unet3d.validation import GZIP_MAGIC

from .errors import MalformedUploadError

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

FIELD_NAME = "file"
# Room for the multipart framing and small extra fields next to the file itself.
ENVELOPE_BYTES = 64 * 1024
_FLUSH_BYTES = 1 << 20
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f/\\]")


@dataclass(frozen=True)
class Upload:
    """An uploaded volume on disk.

    Attributes:
        path: where the bytes were written (a name the server chose).
        filename: the client's file name, reduced to a safe display name (never used as a path).
        size: bytes received.
    """

    path: Path
    filename: str
    size: int


def display_name(raw: str) -> str:
    """The last path component of a client-supplied name, without control characters, at most 200 characters."""
    base = raw.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _UNSAFE_NAME.sub("_", base).strip() or "volume.nii.gz"
    return cleaned[-200:]


async def receive_upload(request: Request, directory: Path, *, max_bytes: int) -> Upload:
    """Stream the multipart field `file` of `request` into `directory`.

    Args:
        request: a `multipart/form-data` request with one `file` part (.nii or .nii.gz).
        directory: an existing private folder; the caller removes it.
        max_bytes: the largest accepted file, in bytes.

    Raises:
        VolumeTooLargeError: the declared or received size passes `max_bytes` (reading stops there).
        UnsupportedFormatError: the file name has a suffix other than .nii or .nii.gz (a name without one is
            taken as .nii.gz or .nii by the file's first bytes; the volume checks that follow judge the rest).
        MalformedUploadError: the body is not multipart or has no (or several) `file` parts.
    """
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in options:
        raise MalformedUploadError(
            "send the volume as multipart/form-data with a field named 'file' (curl: -F 'file=@t1.nii.gz')"
        )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes + ENVELOPE_BYTES:
        raise _too_large(max_bytes)
    sink = _FileSink(directory, max_bytes)
    parser = MultipartParser(options[b"boundary"], sink.callbacks())
    try:
        async for chunk in request.stream():
            if sink.received_total + len(chunk) > max_bytes + ENVELOPE_BYTES:
                raise _too_large(max_bytes)
            sink.received_total += len(chunk)
            parser.write(chunk)
            await sink.flush(final=False)
        parser.finalize()
        await sink.flush(final=True)
    except FormParserError as e:
        raise MalformedUploadError("the multipart body is malformed: resend the file") from e
    finally:
        sink.close()
    return sink.result()


def _too_large(max_bytes: int) -> VolumeTooLargeError:
    return VolumeTooLargeError(
        f"upload is larger than the limit of {max_bytes / 2**20:.3g} MiB: send a smaller volume "
        "(e.g. crop or compress it as .nii.gz) or raise UNET3D_MAX_UPLOAD_MB"
    )


class _FileSink:
    """python-multipart callbacks that route the `file` part to disk and drop everything else."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory, self.max_bytes = directory, max_bytes
        self.received_total = 0
        self.file_bytes = 0
        self.files_seen = 0
        self.path: Path | None = None
        self.filename = ""
        self._handle: BinaryIO | None = None
        self._buffer = bytearray()
        self._in_file = False
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value_part,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._disposition = b""
        self._in_file = False

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_part(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if options.get(b"name") != FIELD_NAME.encode():
            return
        self.files_seen += 1
        if self.files_seen > 1:
            raise MalformedUploadError("send exactly one 'file' part per request")
        if b"filename" not in options:
            raise MalformedUploadError(
                "the 'file' field must be a file upload with a name (curl: -F 'file=@t1.nii.gz')"
            )
        self.filename = display_name(options[b"filename"].decode("utf-8", "replace"))
        if "." in self.filename:
            check_suffix(self.filename)
            suffix = ".nii.gz" if self.filename.lower().endswith(".gz") else ".nii"
        else:  # no suffix at all (`requests` names a bytes upload after its field): the content decides, in result()
            suffix = ""
        self.path = self.directory / f"upload{suffix}"
        self._handle = self.path.open("wb")
        self._in_file = True

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._in_file:
            return
        self.file_bytes += end - start
        if self.file_bytes > self.max_bytes:
            raise _too_large(self.max_bytes)
        self._buffer += data[start:end]

    def _part_end(self) -> None:
        self._in_file = False

    async def flush(self, *, final: bool) -> None:
        """Write buffered file bytes off the event loop once a megabyte has gathered (or at the end)."""
        if self._handle is None or not self._buffer or (len(self._buffer) < _FLUSH_BYTES and not final):
            return
        data, self._buffer = bytes(self._buffer), bytearray()
        await anyio.to_thread.run_sync(self._handle.write, data)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()

    def result(self) -> Upload:
        if self._in_file:
            raise UnreadableVolumeError("the upload ended in the middle of the file: resend it")
        if self.path is None:
            raise MalformedUploadError("the form has no 'file' field: send the volume as -F 'file=@t1.nii.gz'")
        if not self.path.suffix:
            with self.path.open("rb") as handle:
                gzipped = handle.read(2) == GZIP_MAGIC
            self.path = self.path.rename(self.path.with_suffix(".nii.gz" if gzipped else ".nii"))
        return Upload(self.path, self.filename, self.file_bytes)
