"""DICOM series built from the MNI152 template for the DICOM tests, the hostile corpus and bench/dicom.py.

A series is described by a voxel array in nibabel order `(I, J, K)` and its RAS affine, exactly as a NIfTI volume
would be; `write_series` turns it into one single-frame DICOM file per K slice (rows = J, columns = I), deriving
ImageOrientationPatient, ImagePositionPatient and PixelSpacing from the affine the way the standard defines them.
So every test knows the truth (the array and the affine) as well as dcm2niix's opinion of the same files.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import DSfloat

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "api" / "examples" / "mni152_t1.nii.gz"
LPS = np.diag([-1.0, -1.0, 1.0])  # RAS <-> LPS (DICOM's patient coordinates)
MR_IMAGE = UID("1.2.840.10008.5.1.4.1.1.4")
CT_IMAGE = UID("1.2.840.10008.5.1.4.1.1.2")


def template(step: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """The MNI152 T1 (uint8 values 0-255) subsampled by `step` along each axis, and its RAS affine."""
    image = nib.load(TEMPLATE)
    data = np.asarray(image.dataobj)[::step, ::step, ::step].astype(np.float32)
    affine = image.affine @ np.diag([step, step, step, 1.0])
    return data, affine


def reoriented(data: np.ndarray, affine: np.ndarray, codes: str) -> tuple[np.ndarray, np.ndarray]:
    """The same image with its voxel axes pointing along `codes` (e.g. "LPS": axial as scanners store it)."""
    transform = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(affine), nib.orientations.axcodes2ornt(tuple(codes))
    )
    moved = nib.orientations.apply_orientation(data, transform)
    return np.ascontiguousarray(moved), affine @ nib.orientations.inv_ornt_aff(transform, data.shape)


def rotated(affine: np.ndarray, degrees_x: float, degrees_z: float) -> np.ndarray:
    """The grid turned in world space (about the scanner's x, then z axis): an oblique acquisition."""
    ax, az = np.deg2rad(degrees_x), np.deg2rad(degrees_z)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    turned = affine.copy()
    turned[:3, :] = rz @ rx @ affine[:3, :]
    return turned


@dataclass
class Patient:
    """Patient-identifying attributes, written to every file (the tests check none of them leak)."""

    name: str = "Doe^Jane"
    id: str = "PID-0001"
    birth_date: str = "19700101"
    sex: str = "F"


@dataclass
class SeriesSpec:
    """What to write besides the pixels; defaults make a plain MR series."""

    modality: str = "MR"
    dtype: type = np.int16
    slope: float = 1.0
    intercept: float = 0.0
    description: str = "T1 MPRAGE"
    number: int = 3
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "M", "ND")
    patient: Patient = field(default_factory=Patient)
    study_uid: str = field(default_factory=generate_uid)
    series_uid: str = field(default_factory=generate_uid)
    frame_uid: str = field(default_factory=generate_uid)
    transfer_syntax: str = ExplicitVRLittleEndian
    instance_numbers: Sequence[int] | None = None  # default 1..K in slice order
    extra: dict[str, object] = field(default_factory=dict)


def stored_values(data: np.ndarray, spec: SeriesSpec) -> np.ndarray:
    """The integers a scanner would store for `data` under the spec's rescale slope and intercept."""
    return np.rint((data - spec.intercept) / spec.slope).astype(spec.dtype)


def expected_values(data: np.ndarray, spec: SeriesSpec) -> np.ndarray:
    """What a reader must return: the stored integers with the rescale applied (float32)."""
    return stored_values(data, spec).astype(np.float32) * np.float32(spec.slope) + np.float32(spec.intercept)


def slice_datasets(data: np.ndarray, affine: np.ndarray, spec: SeriesSpec) -> list[Dataset]:
    """One single-frame dataset per K slice of `data`, geometry from `affine` (RAS), pixels rescaled per `spec`."""
    matrix, origin = LPS @ affine[:3, :3], LPS @ affine[:3, 3]
    column_step, row_step = np.linalg.norm(matrix[:, 0]), np.linalg.norm(matrix[:, 1])
    orientation = [*(matrix[:, 0] / column_step), *(matrix[:, 1] / row_step)]
    stored = stored_values(data, spec)
    numbers = spec.instance_numbers or range(1, data.shape[2] + 1)
    datasets = []
    for k, number in zip(range(data.shape[2]), numbers, strict=True):
        ds = _base_dataset(spec, CT_IMAGE if spec.modality == "CT" else MR_IMAGE)
        ds.InstanceNumber = number
        ds.ImageOrientationPatient = [DSfloat(v, auto_format=True) for v in orientation]
        ds.ImagePositionPatient = [DSfloat(v, auto_format=True) for v in origin + k * matrix[:, 2]]
        ds.PixelSpacing = [DSfloat(row_step, auto_format=True), DSfloat(column_step, auto_format=True)]
        ds.SliceThickness = DSfloat(abs(float(np.linalg.norm(matrix[:, 2]))), auto_format=True)
        _set_pixels(ds, np.ascontiguousarray(stored[:, :, k].T), spec)
        datasets.append(ds)
    return datasets


def _base_dataset(spec: SeriesSpec, sop_class: UID) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID = spec.patient.name, spec.patient.id
    ds.PatientBirthDate, ds.PatientSex = spec.patient.birth_date, spec.patient.sex
    ds.PatientAddress = "1 Hospital Road"  # beyond what a SEG must copy: it must not reach one
    ds.OtherPatientIDs = "OTHER-77"
    ds.InstitutionName = "Test Hospital"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = spec.study_uid, spec.series_uid
    ds.FrameOfReferenceUID = spec.frame_uid
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240102", "101500", "1", "ACC-1"
    ds.ReferringPhysicianName = "Ref^Doctor"
    ds.SeriesDate, ds.SeriesTime = "20240102", "102000"
    ds.ContentDate, ds.ContentTime = "20240102", "102000"
    ds.Modality, ds.SeriesNumber, ds.SeriesDescription = spec.modality, spec.number, spec.description
    ds.Manufacturer = "unet3d tests"
    ds.ImageType = list(spec.image_type)
    ds.AcquisitionNumber = 1
    ds.PositionReferenceIndicator = ""
    ds.BodyPartExamined, ds.PatientPosition = "HEAD", "HFS"
    if spec.modality == "MR":
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "GR", "SP", "", "3D"
        ds.EchoTime, ds.RepetitionTime, ds.EchoTrainLength = 3.0, 2300.0, 1
        ds.MagneticFieldStrength, ds.ImagedNucleus = 3.0, "1H"
    else:
        ds.KVP = 120
    for keyword, value in spec.extra.items():
        setattr(ds, keyword, value)
    return ds


def _set_pixels(ds: Dataset, frame: np.ndarray, spec: SeriesSpec) -> None:
    ds.Rows, ds.Columns = frame.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    bits = np.dtype(spec.dtype).itemsize * 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = 1 if np.dtype(spec.dtype).kind == "i" else 0
    if spec.modality == "CT" or spec.slope != 1.0 or spec.intercept != 0.0:
        ds.RescaleSlope = DSfloat(spec.slope, auto_format=True)
        ds.RescaleIntercept = DSfloat(spec.intercept, auto_format=True)
        ds.RescaleType = "HU" if spec.modality == "CT" else "US"
    ds.PixelData = frame.astype(frame.dtype.newbyteorder("<")).tobytes()
    if spec.transfer_syntax != ExplicitVRLittleEndian:
        ds.compress(spec.transfer_syntax)


def encode(ds: Dataset) -> bytes:
    """The Part 10 file bytes of a dataset (explicit VR little endian under a transfer syntax pydicom does not know,
    which is how a bogus one is written)."""
    buffer = io.BytesIO()
    if UID(ds.file_meta.TransferSyntaxUID).is_transfer_syntax:
        ds.save_as(buffer, enforce_file_format=True)
    else:
        ds.save_as(buffer, enforce_file_format=True, implicit_vr=False, little_endian=True)
    return buffer.getvalue()


def write_files(folder: Path, datasets: Iterable[Dataset], *, names: Sequence[str] | None = None) -> list[Path]:
    """Write each dataset as `<folder>/<name>` (default IM0001, IM0002, ... without a suffix, as scanners do)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, ds in enumerate(datasets):
        path = folder / (names[index] if names else f"IM{index + 1:04d}")
        path.write_bytes(encode(ds))
        paths.append(path)
    return paths


def write_series(
    folder: Path, data: np.ndarray, affine: np.ndarray, spec: SeriesSpec | None = None, *, shuffle: int | None = None
) -> list[Path]:
    """Write `data` on `affine` as a single-frame series; with `shuffle` (a seed), the file names are random,
    so neither their order nor InstanceNumber-free listing says where a slice lies."""
    datasets = slice_datasets(data, affine, spec or SeriesSpec())
    names = None
    if shuffle is not None:
        rng = np.random.default_rng(shuffle)
        names = [f"{n:08x}.dcm" for n in rng.choice(2**31, size=len(datasets), replace=False)]
    return write_files(folder, datasets, names=names)


def zip_folder(folder: Path, path: Path, *, prefix: str = "", compression: int = zipfile.ZIP_DEFLATED) -> Path:
    """Zip every file under `folder` (names relative to it, under `prefix`), as an export would."""
    with zipfile.ZipFile(path, "w", compression) as archive:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                archive.write(file, f"{prefix}{file.relative_to(folder).as_posix()}")
    return path


def read(path: Path) -> Dataset:
    """A written file, for tests that then alter one attribute."""
    return pydicom.dcmread(path)


def dcm2niix_binary() -> Path:
    """The dcm2niix executable the `dcm2niix` wheel (requirements-dev.txt) installs beside this interpreter."""
    beside = Path(sys.executable).parent / "dcm2niix"
    found = beside if beside.exists() else shutil.which("dcm2niix")
    if found is None:
        raise RuntimeError("dcm2niix is missing: pip install -r requirements-dev.txt")
    return Path(found)


def dcm2niix(folder: Path, out: Path) -> nib.Nifti1Image:
    """dcm2niix's conversion of the one series in `folder` (uncompressed NIfTI), loaded."""
    out.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [str(dcm2niix_binary()), "-z", "n", "-b", "n", "-f", "series", "-o", str(out), str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    written = sorted(out.glob("*.nii"))
    if result.returncode != 0 or len(written) != 1:
        raise AssertionError(f"dcm2niix wrote {[p.name for p in written]}:\n{result.stdout}\n{result.stderr}")
    return nib.load(written[0])


def canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The image reoriented (flips and axis swaps only) to the closest RAS order: two grids that are one set of
    points in world space become equal arrays with equal affines."""
    image = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine))
    return np.asarray(image.dataobj, dtype=np.float64), image.affine


def assert_same_world(data: np.ndarray, affine: np.ndarray, other_data: np.ndarray, other_affine: np.ndarray) -> None:
    """Equal voxel values at equal world positions (affines within 1e-3 mm)."""
    a, a_affine = canonical(data, affine)
    b, b_affine = canonical(other_data, other_affine)
    assert a.shape == b.shape, (a.shape, b.shape)
    np.testing.assert_allclose(a_affine, b_affine, atol=1e-3, rtol=0)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-4)
