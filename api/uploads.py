"""Streaming multipart upload: each file field goes straight to a temp file, the byte cap is enforced while reading.

Starlette's own form parser spools the whole upload before the route runs, so a size cap checked afterwards
is a cap on nothing; this parser stops reading as soon as the cap is passed. The client's filename is kept
for display and output names only: the file on disk is always `<directory>/<field>.nii[.gz]`, and for a field that
takes DICOM `<directory>/<field>.zip`, `<field>.dcm`, or several DICOM parts as `<directory>/<field>/00001`, ...
(the byte cap then applies to their total, and their number is capped too).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import anyio
from fastapi import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from unet3d.archive import MAX_FILES, ZIP_MAGIC
from unet3d.errors import UnreadableVolumeError, VolumeTooLargeError
from unet3d.formats import DICOM_MARKER, check_suffix, nifti_suffix

from .errors import MalformedUploadError

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

FIELD_NAME = "file"
# What each field holds, for the curl example in an error message.
EXAMPLE_FILES = {"file": "t1.nii.gz", "mask": "t1_mask.nii.gz", "image": "t1.nii.gz"}
# Room for the multipart framing and small extra fields next to the file itself.
ENVELOPE_BYTES = 64 * 1024
_FLUSH_BYTES = 1 << 20
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f/\\]")
ZIP_SUFFIX = ".zip"
DICOM_PART_SUFFIXES = (".dcm", ".ima")  # with no suffix at all, the parts of a DICOM field also go to its folder


@dataclass(frozen=True)
class Upload:
    """An uploaded volume on disk.

    Attributes:
        path: where the bytes were written (a name the server chose): a file, or the folder of a DICOM field's parts.
        filename: the client's file name (the first part's), reduced to a safe display name (never used as a path).
        size: bytes received (all parts).
        parts: how many files the field brought (several only for DICOM parts).
    """

    path: Path
    filename: str
    size: int
    parts: int = 1

    @property
    def source(self) -> Path | list[Path]:
        """What to read: the file, or the files of a several-part DICOM upload (`unet3d.io.load_volume` takes both)."""
        return sorted(self.path.iterdir()) if self.parts > 1 else self.path

    @property
    def name(self) -> str | None:
        """The display name for results: the client's file name; None for several parts (the series names itself)."""
        return self.filename if self.parts == 1 else None


def display_name(raw: str) -> str:
    """The last path component of a client-supplied name, without control characters, at most 200 characters."""
    base = raw.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _UNSAFE_NAME.sub("_", base).strip() or "volume.nii.gz"
    return cleaned[-200:]


async def receive_upload(request: Request, directory: Path, *, max_bytes: int, dicom: bool = False) -> Upload:
    """Stream the multipart field `file` of `request` into `directory` (see `receive_uploads`); with `dicom`, it may
    also hold a DICOM series (a .zip, or DICOM files as repeated parts)."""
    fields = (FIELD_NAME,)
    uploads = await receive_uploads(
        request, directory, max_bytes=max_bytes, required=fields, dicom=fields if dicom else ()
    )
    return uploads[FIELD_NAME]


async def receive_uploads(
    request: Request,
    directory: Path,
    *,
    max_bytes: int,
    required: tuple[str, ...],
    optional: tuple[str, ...] = (),
    dicom: tuple[str, ...] = (),
) -> dict[str, Upload]:
    """Stream the named file fields of a multipart `request` into `directory`; other fields are read and dropped.

    Args:
        request: a `multipart/form-data` request with one part per field (.nii or .nii.gz).
        directory: an existing private folder; the caller removes it.
        max_bytes: the largest accepted file, in bytes (each field: all its parts together).
        required, optional: the file fields to keep; a missing required one is an error.
        dicom: the fields that also take DICOM: a .zip, or one or several DICOM files (.dcm, .ima, no suffix) as
            repeated parts, at most `unet3d.archive.MAX_FILES`.

    Returns:
        The uploads by field name (an optional field that was not sent is absent).

    Raises:
        VolumeTooLargeError: the declared or received size passes `max_bytes` (reading stops there), or a DICOM
            field brings more files than allowed.
        UnsupportedFormatError: a file name has a suffix other than .nii or .nii.gz (or those of DICOM, in a DICOM
            field); a name without one is judged by the file's first bytes, as the volume checks that follow judge
            the rest.
        MalformedUploadError: the body is not multipart, lacks a required field or repeats one (other than with
            DICOM files).
    """
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in options:
        raise MalformedUploadError(f"send the volume as multipart/form-data with {_fields_example(required)}")
    fields = (*required, *optional)
    envelope = max_bytes * len(fields) + ENVELOPE_BYTES
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > envelope:
        raise _too_large(max_bytes)
    sink = _FileSink(directory, max_bytes, fields, dicom)
    parser = MultipartParser(options[b"boundary"], sink.callbacks())
    try:
        async for chunk in request.stream():
            if sink.received_total + len(chunk) > envelope:
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
    return sink.result(required)


def _fields_example(names: tuple[str, ...]) -> str:
    """How to send these fields, for an error message: a field named 'file' (curl: -F 'file=@t1.nii.gz')."""
    fields = " and ".join(f"'{name}'" for name in names)
    curl = " ".join(f"-F '{name}=@{EXAMPLE_FILES.get(name, 'volume.nii.gz')}'" for name in names)
    return f"a field named {fields} (curl: {curl})" if len(names) == 1 else f"fields named {fields} (curl: {curl})"


def _too_large(max_bytes: int) -> VolumeTooLargeError:
    return VolumeTooLargeError(
        f"upload is larger than the limit of {max_bytes / 2**20:.3g} MiB: send a smaller volume "
        "(e.g. crop or compress it as .nii.gz) or raise UNET3D_MAX_UPLOAD_MB"
    )


@dataclass
class _Part:
    """One file part being received: its field, its file, the bytes not yet written and the count so far."""

    form_field: str
    path: Path
    filename: str
    handle: BinaryIO
    size: int = 0
    buffer: bytearray = field(default_factory=bytearray)
    done: bool = False


class _FileSink:
    """python-multipart callbacks that route the named file parts to disk and drop everything else."""

    def __init__(self, directory: Path, max_bytes: int, fields: tuple[str, ...], dicom: tuple[str, ...]) -> None:
        self.directory, self.max_bytes, self.fields, self.dicom = directory, max_bytes, fields, dicom
        self.received_total = 0
        self.parts: dict[str, list[_Part]] = {}
        self.field_bytes: dict[str, int] = {}  # the cap holds for a field's parts together
        self.folders: set[str] = set()  # the DICOM fields whose parts go to `<directory>/<field>/`
        self._current: _Part | None = None
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
        self._current = None

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
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name not in self.fields:
            return
        if b"filename" not in options:
            raise MalformedUploadError(f"the '{name}' field must be a file upload with a name (curl: "
                                       f"-F '{name}=@{EXAMPLE_FILES.get(name, 'volume.nii.gz')}')")  # fmt: skip
        filename = display_name(options[b"filename"].decode("utf-8", "replace"))
        into_folder = name in self.dicom and _is_dicom_part(filename)
        if name in self.parts and not (into_folder and name in self.folders):
            several = " (or several DICOM files of one series)" if name in self.dicom else ""
            raise MalformedUploadError(f"send exactly one '{name}' part per request{several}")
        if into_folder:
            path = self._folder_part(name)
        elif name in self.dicom and filename.lower().endswith(ZIP_SUFFIX):
            path = self.directory / f"{name}{ZIP_SUFFIX}"
        elif "." in filename:
            check_suffix(filename)
            path = self.directory / f"{name}{'.nii.gz' if filename.lower().endswith('.gz') else '.nii'}"
        else:  # no suffix at all (`requests` names a bytes upload after its field): the content decides, in result()
            path = self.directory / name
        self._current = _Part(name, path, filename, path.open("wb"))
        self.parts.setdefault(name, []).append(self._current)

    def _folder_part(self, name: str) -> Path:
        """`<directory>/<field>/<n>` for the next DICOM part of a field, within the cap on their number."""
        count = len(self.parts.get(name, ()))
        if count >= MAX_FILES:
            raise VolumeTooLargeError(
                f"the '{name}' field brings more than {MAX_FILES} files: send only the series to segment, as one .zip"
            )
        folder = self.directory / name
        folder.mkdir(exist_ok=True)
        self.folders.add(name)
        return folder / f"{count + 1:05d}"  # the reader judges each by its content

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._current
        if part is None:
            return
        part.size += end - start
        self.field_bytes[part.form_field] = self.field_bytes.get(part.form_field, 0) + end - start
        if self.field_bytes[part.form_field] > self.max_bytes:
            raise _too_large(self.max_bytes)
        part.buffer += data[start:end]

    def _part_end(self) -> None:
        if self._current is not None:
            self._current.done = True
        self._current = None

    async def flush(self, *, final: bool) -> None:
        """Write buffered file bytes off the event loop once a megabyte has gathered (or at the part's end, when its
        file is closed: a DICOM field may bring thousands)."""
        for part in self._all_parts():
            if part.handle.closed:
                continue
            if part.buffer and (len(part.buffer) >= _FLUSH_BYTES or part.done or final):
                data, part.buffer = bytes(part.buffer), bytearray()
                await anyio.to_thread.run_sync(part.handle.write, data)
            if part.done:
                part.handle.close()

    def close(self) -> None:
        for part in self._all_parts():
            part.handle.close()

    def _all_parts(self) -> list[_Part]:
        return [part for parts in self.parts.values() for part in parts]

    def result(self, required: tuple[str, ...]) -> dict[str, Upload]:
        if self._current is not None:
            raise UnreadableVolumeError("the upload ended in the middle of the file: resend it")
        missing = tuple(name for name in required if name not in self.parts)
        if missing:
            which = " and ".join(f"'{name}'" for name in missing)
            raise MalformedUploadError(f"the form has no {which} field: send {_fields_example(missing)}")
        uploads = {}
        for name, parts in self.parts.items():
            path, size = parts[0].path, self.field_bytes.get(name, 0)
            if name in self.folders and len(parts) == 1:  # one DICOM file: a file like any other
                path = path.rename(self.directory / f"{name}{_sniffed_suffix(path, parts[0].filename)}")
            elif name not in self.folders and not path.suffix:
                path = path.rename(path.with_suffix(nifti_suffix(path)))
            folder = name in self.folders and len(parts) > 1
            uploads[name] = Upload(path.parent if folder else path, parts[0].filename, size, len(parts))
        return uploads


def _is_dicom_part(filename: str) -> bool:
    """A part that goes to a DICOM field's folder: a DICOM name (.dcm, .ima), or no suffix at all (scanners write
    IM0001); a .nii/.nii.gz or .zip part is a file of its own."""
    lowered = filename.lower()
    return lowered.endswith(DICOM_PART_SUFFIXES) or ("." not in filename)


def _sniffed_suffix(path: Path, filename: str) -> str:
    """The suffix a DICOM field's file calls for by its first bytes (.zip, .dcm for the DICOM marker), or its client
    name (.dcm, .ima), else NIfTI's."""
    with path.open("rb") as handle:
        head = handle.read(132)
    if head[:4] in ZIP_MAGIC:
        return ZIP_SUFFIX
    if head[128:132] == DICOM_MARKER or filename.lower().endswith(DICOM_PART_SUFFIXES):
        return ".dcm"
    return nifti_suffix(path)
