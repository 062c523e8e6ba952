"""The bad-input corpus: hostile and broken uploads, each with the answer DESIGN.md prescribes.

One list, `CORPUS`, is sent through every front end: `POST /v1/predict` (tests/api/test_hostile_inputs.py), the
`unet3d predict` CLI (tests/unet3d/test_cli_hostile.py) and, for a representative handful, the UI's `/segment`
endpoint through gradio_client. Every file is generated here, small, from fixed seeds.

The service under test runs with the caps in `CAPS` (tight, so that bombs are cheap to build). The CLI has no caps:
where that changes the outcome, `cli` says what the CLI answers instead.
"""

from __future__ import annotations

import gzip
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np
from helpers import sphere_volume

CAPS = {"UNET3D_MAX_UPLOAD_MB": "1", "UNET3D_MAX_DECOMPRESSED_MB": "4", "UNET3D_MAX_VOXELS": "1000000"}
SHAPE = (24, 20, 16)
BOUNDARY = b"corpus-boundary-7d1f"
MULTIPART_HEADERS = {"content-type": f"multipart/form-data; boundary={BOUNDARY.decode()}"}
TRAILING_ZEROS_MB = 512

Part = tuple[bytes, bytes | None, bytes]  # (field name, filename or None for a plain field, content)


@dataclass(frozen=True)
class Case:
    """One hostile input and the expected answer.

    Attributes:
        id: test id.
        status: the HTTP status of `POST /v1/predict` (200 where the NIfTI standard defines the result).
        fragment: words the error `detail` (and the CLI message, the gr.Error) must contain.
        content: builds the uploaded file; None for request-shape cases that only make sense over HTTP.
        filename: the client's file name, as raw bytes.
        parts: builds the whole multipart form instead of one `file` part (request-shape cases).
        params: query parameters.
        content_type: overrides the multipart Content-Type header.
        reference: for 200 cases, builds a well-formed file that must get exactly the same mask.
        cli: (exit code, message fragment) of `unet3d predict` where it differs from the HTTP answer (no caps).
        ui: also sent through the UI's /segment endpoint.
    """

    id: str
    status: int
    fragment: str
    content: Callable[[], bytes] | None = None
    filename: bytes = b"scan.nii.gz"
    parts: Callable[[], list[Part]] | None = None
    params: dict[str, str] = field(default_factory=dict)
    content_type: bytes | None = None
    reference: Callable[[], bytes] | None = None
    cli: tuple[int, str] | None = None
    ui: bool = False

    def form(self) -> list[Part]:
        if self.parts is not None:
            return self.parts()
        assert self.content is not None
        return [(b"file", self.filename, self.content())]

    def body(self) -> bytes:
        return multipart(self.form())

    def headers(self) -> dict[str, str]:
        content_type = self.content_type or b"multipart/form-data; boundary=" + BOUNDARY
        return {"content-type": content_type.decode("latin-1")}

    @property
    def cli_outcome(self) -> tuple[int, str]:
        """(exit code, message fragment) of `unet3d predict` on this file."""
        if self.cli is not None:
            return self.cli
        return (0 if self.status == 200 else 1), self.fragment


def multipart(parts: list[Part]) -> bytes:
    """A multipart/form-data body with exact bytes in every header (filenames need not be UTF-8)."""
    body = b""
    for name, filename, content in parts:
        disposition = b'form-data; name="' + name + b'"'
        if filename is not None:
            disposition += b'; filename="' + filename + b'"'
        body += b"--" + BOUNDARY + b"\r\nContent-Disposition: " + disposition + b"\r\n"
        body += b"Content-Type: application/octet-stream\r\n\r\n" + content + b"\r\n"
    return body + b"--" + BOUNDARY + b"--\r\n"


# ---- builders -------------------------------------------------------------------------------------------------------


def blob(shape: tuple[int, ...] = SHAPE, dtype: type | str = np.float32, seed: int = 0) -> np.ndarray:
    """The smooth noisy blob of tests/helpers.py: the random tiny model gives it a mixed mask."""
    return sphere_volume(shape[:3], seed=seed).reshape(shape).astype(dtype)


def encode(image: nib.Nifti1Image | nib.Nifti2Image, *, gz: bool = True) -> bytes:
    raw = image.to_bytes()
    return gzip.compress(raw, compresslevel=1) if gz else raw


def nifti(
    data: np.ndarray | None = None, *, gz: bool = True, version: int = 1, affine: np.ndarray | None = None
) -> bytes:
    """A NIfTI file (the blob by default) with its qform and sform both set, code 1."""
    data = blob() if data is None else data
    image_class = nib.Nifti2Image if version == 2 else nib.Nifti1Image
    image = image_class(data, np.eye(4) if affine is None else affine)
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    return encode(image, gz=gz)


def patched(offset: int, fmt: str, *values: float, data: np.ndarray | None = None, gz: bool = True) -> bytes:
    """A valid NIfTI-1 file with header bytes at `offset` overwritten (nibabel would refuse to write them)."""
    raw = bytearray(nifti(data, gz=False))
    packed = struct.pack(fmt, *values)
    raw[offset : offset + len(packed)] = packed
    return gzip.compress(bytes(raw), compresslevel=1) if gz else bytes(raw)


def header_only(shape: tuple[int, ...], dtype: type, *, version: int = 1, tail: int = 1000) -> bytes:
    """A gzip-compressed header that declares `shape` followed by only `tail` zero bytes."""
    header = nib.Nifti2Header() if version == 2 else nib.Nifti1Header()
    header.set_data_dtype(dtype)
    header.set_data_shape((4, 4, 4))
    raw = bytearray(header.binaryblock + b"\0" * 4 + b"\0" * tail)
    dims = [len(shape), *shape] + [1] * (7 - len(shape))
    if version == 2:
        raw[16:80] = struct.pack("<8q", *dims)
    else:
        raw[40:56] = struct.pack("<8h", *dims)
    return gzip.compress(bytes(raw))


def with_scaling(slope: float, inter: float) -> bytes:
    """int16 voxels with scl_slope/scl_inter patched in (nibabel recomputes them on save)."""
    return patched(112, "<2f", slope, inter, data=np.rint(blob()).astype(np.int16))


def unscaled() -> bytes:
    return patched(112, "<2f", 1.0, 0.0, data=np.rint(blob()).astype(np.int16))


def inconsistent_geometry() -> bytes:
    """A qform (LPS, rotated, 1.2 x 0.9 x 2 mm) that disagrees with the sform (RAS, 1 mm, shifted)."""
    image = nib.Nifti1Image(blob(), None)
    angle = np.deg2rad(20)
    qform = np.eye(4)
    qform[:3, :3] = np.array([[-np.cos(angle), np.sin(angle), 0], [-np.sin(angle), -np.cos(angle), 0], [0, 0, 1]])
    qform[:3, :3] = qform[:3, :3] @ np.diag([1.2, 0.9, 2.0])
    qform[:3, 3] = [30.0, -40.0, 12.0]
    sform = np.eye(4)
    sform[:3, 3] = [-5.0, 7.0, 3.0]
    image.set_qform(qform, code=1)
    image.set_sform(sform, code=2)
    return encode(image)


def consistent_geometry() -> bytes:
    """The sform of `inconsistent_geometry` alone: the transform nibabel (and so the network) uses."""
    sform = np.eye(4)
    sform[:3, 3] = [-5.0, 7.0, 3.0]
    return nifti(affine=sform)


def gzip_with_trailing_zeros(megabytes: int = TRAILING_ZEROS_MB) -> bytes:
    """A valid volume whose gzip stream goes on with `megabytes` of zeros: ~1 kB per MB on the wire."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: a gzip container
    chunks = [compressor.compress(nifti(gz=False))]
    zeros = bytes(1 << 20)
    chunks += [compressor.compress(zeros) for _ in range(megabytes)]
    return b"".join([*chunks, compressor.flush()])


def corrupt_deflate() -> bytes:
    """A gzip stream whose compressed data is damaged after the header: only the checksum can tell."""
    data = np.random.default_rng(7).integers(0, 4000, (40, 40, 40)).astype(np.int16)
    stream = bytearray(nifti(data))
    middle = len(stream) * 3 // 4
    stream[middle : middle + 64] = bytes(64)
    return bytes(stream)


def truncated(gz: bool) -> bytes:
    payload = nifti(blob((40, 40, 40)), gz=gz)
    return payload[: len(payload) // 2]


def analyze_header() -> bytes:
    """An Analyze 7.5 .hdr (348 bytes, no NIfTI magic)."""
    header = nib.AnalyzeHeader()
    header.set_data_shape(SHAPE)
    header.set_data_dtype(np.float32)
    return header.binaryblock


def analyze_image() -> bytes:
    return blob().tobytes(order="F")


def nifti_pair_header() -> bytes:
    """The .hdr half of a NIfTI-1 pair (magic "ni1"), uploaded on its own as .nii."""
    header = nib.nifti1.Nifti1PairHeader()
    header.set_data_shape(SHAPE)
    header.set_data_dtype(np.float32)
    return header.binaryblock + blob().tobytes(order="F")


def dicom() -> bytes:
    """A DICOM Part 10 preamble ("DICM" after 128 bytes) and a few data elements."""
    return b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\x14\x001.2.840.10008.1.2.1\0" + bytes(400)


def png() -> bytes:
    return b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x00\x00\x00\x00" + bytes(400)


def rgb() -> bytes:
    data = np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    return encode(nib.Nifti1Image(data, np.eye(4)))


def with_voxels(*values: float) -> bytes:
    data = blob()
    data[0, 0, : len(values)] = values
    return nifti(data)


def big_endian() -> bytes:
    return nifti(blob(dtype=">f4"))


def file_field(filename: bytes) -> Callable[[], list[Part]]:
    return lambda: [(b"file", filename, nifti())]


def two_files() -> list[Part]:
    return [(b"file", b"a.nii.gz", nifti()), (b"file", b"b.nii.gz", nifti(blob(seed=1)))]


def oversized() -> bytes:
    return np.random.default_rng(3).bytes(int(1.5 * 2**20))


# ---- the corpus -----------------------------------------------------------------------------------------------------

NOT_GZIP = "not gzip-compressed"
NO_HEADER = "does not start with a NIfTI header"
NOT_3D = "expected a 3D volume"

# fmt: off
CORPUS: list[Case] = [
    # Not NIfTI at all (415), or nothing there (400).
    Case("empty-file", 400, "the file is empty", lambda: b"", ui=True),
    Case("text-named-nii-gz", 415, NOT_GZIP, lambda: b"patient notes, not a volume\n" * 20, ui=True),
    Case("gzipped-text-named-nii-gz", 415, NO_HEADER, lambda: gzip.compress(b"not a volume\n" * 100)),
    Case("png-named-nii-gz", 415, f"{NOT_GZIP}: it is a 2D picture", png),
    Case("png-named-nii", 415, f"{NO_HEADER}: it is a 2D picture", png, filename=b"scan.nii"),
    # unet3d reads DICOM series (a folder, a .zip, .dcm files); one named as NIfTI is refused with what to send.
    Case("dicom-named-nii-gz", 415, f"{NOT_GZIP}: it is a DICOM file: send the whole series", dicom, ui=True),
    Case("dicom-named-nii", 415, f"{NO_HEADER}: it is a DICOM file: send the whole series", dicom,
         filename=b"scan.nii"),
    Case("gzip-named-nii", 415, "name it .nii.gz", nifti, filename=b"scan.nii"),
    Case("analyze-hdr", 415, "not a NIfTI file", analyze_header, filename=b"scan.hdr"),
    Case("analyze-img", 415, "not a NIfTI file", analyze_image, filename=b"scan.img"),
    Case("analyze-header-named-nii", 415, "Analyze 7.5", analyze_header, filename=b"scan.nii"),
    Case("nifti-pair-header-named-nii", 415, "NIfTI pairs", nifti_pair_header, filename=b"scan.nii"),
    # Damaged files (400).
    Case("truncated-nii-gz", 400, "truncated", lambda: truncated(gz=True), ui=True),
    Case("truncated-nii", 400, "truncated", lambda: truncated(gz=False), filename=b"scan.nii"),
    Case("corrupt-gzip-stream", 400, "cannot read the NIfTI header", lambda: b"\x1f\x8b\x08\x00" + bytes(300)),
    Case("corrupt-deflate-data", 400, "corrupt", corrupt_deflate),
    Case("negative-dimension", 400, "negative dimension", lambda: patched(40, "<4h", 3, 24, -5, 16)),
    Case("dim0-out-of-range", 400, "cannot read the NIfTI header", lambda: patched(40, "<h", 9)),
    Case("unknown-datatype-code", 400, "cannot read the NIfTI header", lambda: patched(70, "<h", 9999)),
    Case("negative-vox-offset", 400, "cannot read the NIfTI header", lambda: patched(108, "<f", -100.0)),
    Case("nan-vox-offset", 400, "invalid values", lambda: patched(108, "<f", float("nan"))),
    Case("vox-offset-past-the-end", 400, "truncated", lambda: patched(108, "<f", 1e6, gz=False), filename=b"s.nii"),
    # Too large, found from the header or while inflating, never by allocating (413).
    Case("gzip-bomb-header", 413, "voxels", lambda: header_only((4096, 4096, 4096), np.uint8), ui=True,
         cli=(1, "truncated")),
    Case("gzip-bomb-decompressed", 413, "uncompressed", lambda: nifti(np.zeros((96, 96, 96))), cli=(1, "constant")),
    Case("gzip-bomb-trailing-data", 413, "inflates to more than", gzip_with_trailing_zeros, cli=(0, "")),
    Case("absurd-dimensions", 413, "voxels", lambda: header_only((32767, 32767, 32767), np.int16),
         cli=(1, "truncated")),
    Case("nifti2-dimensions-overflowing-int64", 413, "voxels",
         lambda: header_only((2**40, 2**40, 2**40), np.float32, version=2), cli=(1, "truncated")),
    Case("upload-over-max-upload-mb", 413, "UNET3D_MAX_UPLOAD_MB", oversized, cli=(1, NOT_GZIP)),
    # NIfTI that cannot be segmented (422).
    Case("zero-dimension", 422, "too small", lambda: patched(40, "<4h", 3, 24, 0, 16)),
    Case("one-voxel", 422, "too small", lambda: nifti(np.ones((1, 1, 1), np.float32))),
    Case("2d-image", 422, NOT_3D, lambda: nifti(blob((24, 20, 1)).reshape(24, 20))),
    Case("5d-volume", 422, NOT_3D, lambda: nifti(np.stack([blob()] * 3, -1)[..., None, :])),
    Case("4d-three-frames", 422, NOT_3D, lambda: nifti(np.stack([blob(seed=s) for s in range(3)], -1)), ui=True),
    Case("nan-voxels", 422, "NaN or infinite", lambda: with_voxels(np.nan, 1.0, np.nan), ui=True),
    Case("inf-voxels", 422, "NaN or infinite", lambda: with_voxels(np.inf, -np.inf)),
    Case("constant-volume", 422, "constant", lambda: nifti(np.full(SHAPE, 7.0, np.float32))),
    Case("rgb-datatype", 422, "RGB24", rgb),
    Case("complex-datatype", 422, "complex64", lambda: nifti(blob().astype(np.complex64))),
    Case("bool-datatype", 422, "binary (1 bit)", lambda: patched(70, "<2h", 1, 1)),
    Case("degenerate-affine", 422, "degenerate", lambda: patched(280, "<f", float("nan"))),
    # What the NIfTI standard defines gets a 200 and the right mask.
    # scl_slope 0 (or NaN) means "unscaled" (nifti1.h: "If the scl_slope field is nonzero, then each voxel value
    # in the dataset should be scaled"): the mask must equal that of the same voxels stored without scaling.
    Case("scl-slope-zero", 200, "", lambda: with_scaling(0.0, 5.0), reference=unscaled),
    Case("scl-slope-nan", 200, "", lambda: with_scaling(float("nan"), 5.0), reference=unscaled),
    # Both transforms are kept in the mask; the network sees the data through the sform (NIfTI's preference).
    Case("inconsistent-qform-sform", 200, "", inconsistent_geometry, reference=consistent_geometry),
    Case("nifti2", 200, "", lambda: nifti(version=2), reference=nifti),
    Case("big-endian", 200, "", big_endian, reference=nifti),
    Case("4d-single-frame", 200, "", lambda: nifti(blob((*SHAPE, 1))), reference=nifti),
    # Client file names are display names only: never a path, sanitised in Content-Disposition.
    Case("filename-dot-dot", 200, "", nifti, filename=b"../../../../etc/cron.d/evil.nii.gz", reference=nifti),
    Case("filename-absolute", 200, "", nifti, filename=b"/etc/passwd.nii.gz", reference=nifti),
    Case("filename-windows-path", 200, "", nifti, filename=b"C:\\Windows\\System32\\scan.nii.gz", reference=nifti),
    Case("filename-not-utf8", 200, "", nifti, filename=b"\xff\xfe\xc3(scan\x80.nii.gz", reference=nifti),
    Case("filename-header-injection", 200, "", nifti, filename=b"x\\\"; filename*=UTF-8''evil.sh; y=.nii.gz",
         reference=nifti),
    # The request itself is malformed (HTTP only).
    Case("no-file-field", 422, "no 'file' field", parts=lambda: [(b"note", None, b"hello")]),
    Case("wrong-field-name", 422, "no 'file' field", parts=lambda: [(b"volume", b"scan.nii.gz", nifti())]),
    Case("two-files", 422, "exactly one 'file' part", parts=two_files),
    Case("file-field-without-filename", 422, "must be a file upload", parts=lambda: [(b"file", None, nifti())]),
    Case("not-multipart", 422, "multipart/form-data", parts=lambda: [], content_type=b"application/json"),
    Case("multipart-without-boundary", 422, "multipart/form-data", parts=file_field(b"a.nii.gz"),
         content_type=b"multipart/form-data"),
    Case("threshold-2", 422, "threshold", parts=file_field(b"a.nii.gz"), params={"threshold": "2"}),
    Case("threshold-nan", 422, "threshold", parts=file_field(b"a.nii.gz"), params={"threshold": "nan"}),
    Case("mode-fast", 422, "mode", parts=file_field(b"a.nii.gz"), params={"mode": "fast"}),
    Case("tta-maybe", 422, "tta", parts=file_field(b"a.nii.gz"), params={"tta": "maybe"}),
    Case("return-binary-perhaps", 422, "return_binary", parts=file_field(b"a.nii.gz"),
         params={"return_binary": "perhaps"}),
]
# fmt: on

FILE_CASES = [case for case in CORPUS if case.content is not None]
UI_CASES = [case for case in CORPUS if case.ui]

# What an error message must never show: tracebacks, server paths, library internals, exception class names.
LEAK = re.compile(
    r"Traceback|File \"|site-packages|\.py\b|/tmp/|/work/|/home/|/root/|/usr/|unet3d-request|upload\.nii"
    r"|nibabel|numpy|torch|pydantic|starlette|python_multipart|\b\w+(Error|Exception)\b|Errno|0x[0-9a-f]{6,}"
)


def leaks(message: str) -> list[str]:
    """The fragments of `message` that leak internals (empty when clean)."""
    return [match.group(0) for match in LEAK.finditer(message)]
