"""The hostile DICOM corpus: broken and malicious uploads (each a .zip, as clients send a series), with the answer.

`dicom_corpus()` is sent to `unet3d.dicom.load_dicom` by tests/unet3d/test_dicom_hostile.py; the HTTP and CLI tests
can send the same bytes once they accept DICOM (`status` is the HTTP answer api/errors.py maps the error to).
Every file is generated here, small, from fixed seeds (series from the MNI template at 6 mm: 33×39×32 voxels).
"""

from __future__ import annotations

import io
import stat
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from dicom_series import Patient, SeriesSpec, encode, rotated, slice_datasets, template
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate

from unet3d.errors import (
    AmbiguousSeriesError,
    InvalidVolumeError,
    Unet3dError,
    UnreadableVolumeError,
    UnsupportedFormatError,
    VolumeTooLargeError,
)

STEP = 6  # template subsampling: 33×39×32 voxels, ~80 kB a series
BOMB_MB = 128
PHI = (Patient().name, Patient().id, Patient().birth_date, "Doe", "PID-0001", "19700101")


@dataclass(frozen=True)
class DicomCase:
    """One upload and the expected answer.

    Attributes:
        id: test id.
        content: builds the upload (zip bytes).
        error: the Unet3dError subclass `load_dicom` raises; None when the upload is valid.
        fragment: words the message must contain (or, for a valid upload, the expected shape as text).
        status: the HTTP status for the same upload.
        limits: keyword caps for `load_dicom` (max_voxels, max_decompressed_bytes); none by default, as the CLI.
    """

    id: str
    content: Callable[[], bytes]
    error: type[Unet3dError] | None
    fragment: str
    status: int
    limits: dict[str, int] = field(default_factory=dict)


def datasets(spec: SeriesSpec | None = None, *, shape_step: int = STEP, tilt: float = 0.0) -> list[Dataset]:
    """The small template series; `tilt` (degrees) shears the slice positions as a tilted CT gantry does."""
    data, affine = template(shape_step)
    affine = affine.copy()
    if tilt:
        affine[1, 2] = np.tan(np.deg2rad(tilt)) * affine[2, 2]  # each slice moves along y as z advances
    return slice_datasets(data, affine, spec or SeriesSpec())


def zipped(files: list[tuple[str, bytes]]) -> bytes:
    """A deflated zip of (name, content) entries."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files:
            archive.writestr(name, content)
    return buffer.getvalue()


def series_zip(series: list[Dataset], prefix: str = "DICOM/") -> bytes:
    return zipped([(f"{prefix}IM{i + 1:04d}", encode(ds)) for i, ds in enumerate(series)])


def bomb(megabytes: int = BOMB_MB) -> bytes:
    """One entry of `megabytes` of zeros, streamed in: ~1 kB on the wire per MiB."""
    buffer = io.BytesIO()
    zeros = bytes(1 << 20)
    with (
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive,
        archive.open("DICOM/IM0001", "w", force_zip64=True) as entry,
    ):
        for _ in range(megabytes):
            entry.write(zeros)
    return buffer.getvalue()


def lying_index() -> bytes:
    """An entry that inflates to 16 MiB while its local header and the index declare 1000 bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("DICOM/IM0001", bytes(1000))
        info = archive.getinfo("DICOM/IM0001")
    data = bytearray(buffer.getvalue())
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate, as zip stores it
    payload = deflate.compress(b"\x01" * (16 << 20)) + deflate.flush()
    start = 30 + len(info.filename.encode()) + len(info.extra)  # after the local file header
    data[start : start + info.compress_size] = payload
    # Patch the compressed size (local header, central directory) and the index offset so zipfile finds it all.
    data[18:22] = len(payload).to_bytes(4, "little")
    central = data.index(b"PK\x01\x02")
    data[central + 20 : central + 24] = len(payload).to_bytes(4, "little")
    end = data.index(b"PK\x05\x06")
    data[end + 16 : end + 20] = central.to_bytes(4, "little")
    return bytes(data)


def with_entry(name: str, content: bytes, *, mode: int | None = None) -> Callable[[], bytes]:
    def build() -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for i, ds in enumerate(datasets()):
                archive.writestr(f"DICOM/IM{i + 1:04d}", encode(ds))
            info = zipfile.ZipInfo(name)
            if mode is not None:
                info.external_attr = mode << 16
            archive.writestr(info, content)
        return buffer.getvalue()

    return build


def tiny_entries(count: int = 10_000) -> bytes:
    return zipped([(f"f{i:05d}.txt", b"x") for i in range(count)])


def with_junk() -> bytes:
    """A valid series with what real exports carry besides: a README, a PNG, a nested zip, macOS metadata."""
    junk = [
        ("README.TXT", b"Exported by a PACS"),
        ("preview.png", b"\x89PNG\r\n\x1a\n" + bytes(64)),
        ("other.zip", zipped([("x", b"y")])),
        (".DS_Store", bytes(64)),
        ("__MACOSX/DICOM/._IM0001", bytes(64)),
    ]
    return zipped([*[(f"export/DICOM/IM{i + 1:04d}", encode(ds)) for i, ds in enumerate(datasets())], *junk])


def truncated_pixels() -> bytes:
    series = [encode(ds) for ds in datasets()]
    series[5] = series[5][: len(series[5]) - 700]
    return zipped([(f"IM{i + 1:04d}", data) for i, data in enumerate(series)])


def altered(change: Callable[[Dataset, int], None], spec: SeriesSpec | None = None) -> Callable[[], bytes]:
    """The small series with `change(dataset, index)` applied to every file."""

    def build() -> bytes:
        series = datasets(spec)
        for index, ds in enumerate(series):
            change(ds, index)
        return series_zip(series)

    return build


def rows_plus_one(ds: Dataset, _: int) -> None:
    ds.Rows += 1


def bogus_syntax(ds: Dataset, _: int) -> None:
    ds.file_meta.TransferSyntaxUID = "1.2.3.4.5"


def encapsulated(syntax: str) -> Callable[[Dataset, int], None]:
    def change(ds: Dataset, _: int) -> None:
        ds.file_meta.TransferSyntaxUID = syntax
        ds.PixelData = encapsulate([b"\x00\x01" * 64])

    return change


def colour(ds: Dataset, _: int) -> None:
    grey = np.frombuffer(ds.PixelData, "<i2").reshape(ds.Rows, ds.Columns)
    ds.PixelData = np.clip(np.repeat(grey[..., None], 3, axis=2), 0, 255).astype(np.uint8).tobytes()
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0


def no_position(ds: Dataset, _: int) -> None:
    del ds.ImagePositionPatient


def every_other_size(ds: Dataset, index: int) -> None:
    if index % 2:
        ds.Columns -= 1
        ds.PixelData = np.frombuffer(ds.PixelData, "<i2").reshape(ds.Rows, ds.Columns + 1)[:, :-1].tobytes()


def half_turned(ds: Dataset, index: int) -> None:
    if index >= 16:
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]


def two_series(*, second_patient: Patient | None = None, duplicate_positions: bool = False) -> Callable[[], bytes]:
    def build() -> bytes:
        first = datasets()
        spec = SeriesSpec(description="T2 FLAIR", number=4, patient=second_patient or Patient())
        if duplicate_positions:  # a second echo in the same series: same UID, same positions
            spec.series_uid = first[0].SeriesInstanceUID
        second = datasets(spec)
        return zipped([(f"A/IM{i:04d}", encode(ds)) for i, ds in enumerate(first)]
                      + [(f"B/IM{i:04d}", encode(ds)) for i, ds in enumerate(second)])  # fmt: skip

    return build


def missing_slice() -> bytes:
    series = datasets()
    del series[10]
    return series_zip(series)


def few_slices() -> bytes:
    return series_zip(datasets()[:3])


def testdata(name: str) -> Callable[[], bytes]:
    return lambda: zipped([(name, Path(get_testdata_file(name)).read_bytes())])


def damaged_dicom() -> bytes:
    """A series with one file cut inside its header (as an interrupted copy leaves it)."""
    series = [encode(ds) for ds in datasets()]
    series[7] = series[7][:700]
    return zipped([(f"IM{i + 1:04d}", data) for i, data in enumerate(series)])


def oblique_tilt() -> bytes:
    data, affine = template(STEP)
    return series_zip(slice_datasets(data, rotated(affine, 0, 0), SeriesSpec()))


def dicom_corpus() -> list[DicomCase]:
    """Every hostile or broken DICOM upload, with the answer."""
    capped = {"max_decompressed_bytes": 4 << 20}
    # fmt: off
    return [
        DicomCase("zip-bomb-ratio", bomb, VolumeTooLargeError, "times its compressed size", 413),
        DicomCase("zip-bomb-capped", bomb, VolumeTooLargeError, "more than the limit of 4.0 MiB", 413, capped),
        DicomCase("zip-bomb-lying-index", lying_index, UnreadableVolumeError, "the zip is damaged", 400),
        DicomCase("zip-slip-parent", with_entry("../../evil/IM9999", b"x"), UnreadableVolumeError,
                  "points outside the archive", 400),
        DicomCase("zip-slip-absolute", with_entry("/tmp/evil/IM9999", b"x"), UnreadableVolumeError,
                  "points outside the archive", 400),
        DicomCase("zip-symlink", with_entry("DICOM/link", b"/etc/passwd", mode=stat.S_IFLNK | 0o777),
                  UnreadableVolumeError, "symbolic link", 400),
        DicomCase("zip-10000-tiny-entries", tiny_entries, VolumeTooLargeError,
                  "10000 files, more than the limit of 5000", 413),
        DicomCase("zip-corrupt", lambda: series_zip(datasets())[:5000], UnreadableVolumeError, "re-create the zip",
                  400),
        DicomCase("zip-empty", lambda: zipped([]), UnsupportedFormatError, "none of the 0 files is DICOM", 415),
        DicomCase("no-dicom-at-all", lambda: zipped([("a.txt", b"a"), ("b.nii", b"b"), ("c.png", b"c")]),
                  UnsupportedFormatError, "none of the 3 files is DICOM", 415),
        DicomCase("non-dicom-mixed-in", with_junk, None, "(33, 39, 32)", 200),
        DicomCase("damaged-dicom-file", damaged_dicom, UnreadableVolumeError, "damaged DICOM file", 400),
        DicomCase("truncated-pixel-data", truncated_pixels, UnreadableVolumeError, "is truncated", 400),
        DicomCase("pixel-length-mismatch", altered(rows_plus_one), UnreadableVolumeError,
                  "Rows × Columns × frames", 400),
        DicomCase("bogus-transfer-syntax", altered(bogus_syntax), UnsupportedFormatError,
                  "1.2.3.4.5, which is not a standard DICOM transfer syntax", 415),
        DicomCase("undecodable-transfer-syntax", altered(encapsulated("1.2.840.10008.1.2.4.100")),
                  UnsupportedFormatError, "MPEG2", 415),
        DicomCase("damaged-compressed-pixels", altered(encapsulated("1.2.840.10008.1.2.5")), UnreadableVolumeError,
                  "cannot decode the pixels", 400),
        DicomCase("two-patients", two_series(second_patient=Patient("Roe^Richard", "PID-0002", "19800202", "M")),
                  InvalidVolumeError, "mixes 2 patients", 422),
        DicomCase("two-volumetric-series", two_series(), AmbiguousSeriesError, "series=UID", 422),
        DicomCase("two-echoes-in-one-series", two_series(duplicate_positions=True), InvalidVolumeError,
                  "share one slice position", 422),
        DicomCase("gantry-tilt", lambda: series_zip(datasets(tilt=20.0)), InvalidVolumeError, "gantry tilt of 20.0°",
                  422),
        DicomCase("missing-slice", missing_slice, InvalidVolumeError, "unevenly spaced", 422),
        DicomCase("mixed-orientations", altered(half_turned), InvalidVolumeError, "mixes slice orientations", 422),
        DicomCase("mixed-sizes", altered(every_other_size), InvalidVolumeError, "mixes image sizes", 422),
        DicomCase("too-few-slices", few_slices, InvalidVolumeError, "at least 4 slices", 422),
        DicomCase("no-geometry", altered(no_position), InvalidVolumeError, "no ImagePositionPatient", 422),
        DicomCase("colour-images", altered(colour), InvalidVolumeError, "in colour", 422),
        DicomCase("only-a-report", testdata("test-SR.dcm"), InvalidVolumeError, "structured report", 422),
        DicomCase("only-a-seg", testdata("liver_1frame.dcm"), InvalidVolumeError, "segmentation (SEG)", 422),
        DicomCase("voxel-cap", lambda: series_zip(datasets()), VolumeTooLargeError, "more than the limit of 1000",
                  413, {"max_voxels": 1000}),
    ]
    # fmt: on
