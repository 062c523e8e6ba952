"""What a file is, from its name and first bytes: single-file NIfTI-1 or -2 (gzip-compressed or not) or a DICOM series
(a folder, a .zip, DICOM files) that unet3d reads, or what else it looks like and how to convert it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import nibabel as nib

from .archive import ZIP_MAGIC
from .errors import InvalidVolumeError, UnreadableVolumeError, UnsupportedFormatError

__all__ = ["DICOM_MARKER", "GZIP_MAGIC", "check_suffix", "looks_like_dicom", "nifti_suffix"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
GZIP_MAGIC = b"\x1f\x8b"  # the first two bytes of every gzip stream
# NIfTI datatype codes that are not one real-valued intensity per voxel.
_UNSUPPORTED_TYPES = {1: "binary (1 bit)", 32: "complex64", 128: "RGB24", 1792: "complex128", 2048: "complex256",
                      2304: "RGBA32"}  # fmt: skip

# What gets mistaken for NIfTI, by its first bytes (offset, magic) and by its name, with the way to convert it.
_DICOM = (
    "a DICOM file: send the whole series instead, as the folder holding its files or a .zip of it (one file is read "
    "on its own only when it holds the whole volume, as an enhanced multi-frame object does)"
)
DICOM_MARKER = b"DICM"  # DICOM Part 10: these 4 bytes follow a 128-byte preamble
DICOM_SUFFIXES = (".dcm",)
_NRRD = "an NRRD file: convert it to NIfTI first, e.g. with 3D Slicer or SimpleITK"
_META = "a MetaImage file: convert it to NIfTI first, e.g. with 3D Slicer or SimpleITK"
_PICTURE = "a 2D picture: unet3d segments 3D volumes, so export the scan itself as NIfTI"
_MAGIC = ((128, DICOM_MARKER, _DICOM), (0, b"NRRD", _NRRD), (0, b"ObjectType", _META), (0, b"\x89PNG", _PICTURE),
          (0, b"\xff\xd8\xff", _PICTURE))  # fmt: skip
_SUFFIXES = {
    ".dcm": _DICOM, ".ima": _DICOM, ".nrrd": _NRRD, ".nhdr": _NRRD, ".mha": _META, ".mhd": _META,
    ".mgz": "a FreeSurfer volume: convert it first with `mri_convert scan.mgz scan.nii.gz`",
    ".mgh": "a FreeSurfer volume: convert it first with `mri_convert scan.mgh scan.nii.gz`",
    ".png": _PICTURE, ".jpg": _PICTURE, ".jpeg": _PICTURE, ".tif": _PICTURE, ".tiff": _PICTURE,
}  # fmt: skip


def check_suffix(name: str) -> None:
    """Raise `UnsupportedFormatError` unless `name` ends in .nii or .nii.gz."""
    if not name.lower().endswith(NIFTI_SUFFIXES):
        base = name.replace("\\", "/").rsplit("/", 1)[-1]
        shown = base if len(base) <= 60 else f"{base[:57]}…"
        known = other_format(name=base)
        advice = f"; it looks like {known}" if known else ""
        raise UnsupportedFormatError(f"'{shown}' is not a NIfTI file: expected a .nii or .nii.gz file{advice}")


def looks_like_dicom(source: str | Path | Sequence[str | Path]) -> bool:
    """Whether `source` is for the DICOM reader rather than the NIfTI reader: a folder, several files, a zip (by
    content, whatever its name), or a file named .dcm or carrying the DICOM Part 10 marker (`DICM` after 128 bytes).

    A .nii/.nii.gz name is NIfTI without a look inside (its reader opens it once, and names DICOM content if that is
    what it finds). `unet3d.io.load_volume` dispatches on this; a folder of NIfTI files is a DICOM source that holds
    no DICOM.
    """
    if not isinstance(source, str | Path):
        return True
    path = Path(source)
    if path.is_dir() or path.suffix.lower() in DICOM_SUFFIXES:
        return True
    if path.name.lower().endswith(NIFTI_SUFFIXES):
        return False
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return head[:4] in ZIP_MAGIC or head[128:] == DICOM_MARKER


def other_format(head: bytes = b"", name: str = "") -> str | None:
    """What a non-NIfTI file looks like from its first bytes or, failing that, its name, and how to convert it."""
    for offset, magic, description in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return description
    suffix = name.lower().rsplit(".", 1)[-1] if "." in name else ""
    return _SUFFIXES.get(f".{suffix}")


def nifti_suffix(path: Path) -> Literal[".nii", ".nii.gz"]:
    """The suffix a file's first bytes call for: .nii.gz for a gzip stream, else .nii (the checks judge the rest)."""
    with path.open("rb") as handle:
        return ".nii.gz" if handle.read(len(GZIP_MAGIC)) == GZIP_MAGIC else ".nii"


def sniff_nifti(head: bytes) -> type[nib.Nifti1Header] | type[nib.Nifti2Header]:
    """The header class of a file's first (decompressed) bytes; refuses what is not single-file NIfTI (text, PNG,
    DICOM, Analyze 7.5, NIfTI pairs) and voxel types that are not one real value (RGB, complex)."""
    if len(head) < 348:
        raise UnreadableVolumeError(
            f"cannot read the NIfTI header: the file holds only {len(head)} bytes, less than a header: "
            "is it a complete .nii or .nii.gz volume?"
        )
    sizes = {int.from_bytes(head[:4], "little"), int.from_bytes(head[:4], "big")} & {348, 540}
    if not sizes:
        known = other_format(head)
        expected = f"it is {known}" if known else "expected a .nii or .nii.gz volume"
        raise UnsupportedFormatError(f"the file does not start with a NIfTI header: {expected}")
    is_nifti1 = 348 in sizes
    magic = head[344:347] if is_nifti1 else head[4:7]
    if magic in (b"ni1", b"ni2"):
        raise UnsupportedFormatError("NIfTI pairs (.hdr + .img) are not supported: save the image as one .nii file")
    if magic not in (b"n+1", b"n+2"):
        raise UnsupportedFormatError(
            "the header lacks the NIfTI magic (an Analyze 7.5 .hdr/.img?): convert it to .nii or .nii.gz"
        )
    order: Literal["little", "big"] = "little" if int.from_bytes(head[:4], "little") in sizes else "big"
    code = int.from_bytes(head[70:72] if is_nifti1 else head[12:14], order)
    if code in _UNSUPPORTED_TYPES:
        raise InvalidVolumeError(
            f"unsupported voxel type {_UNSUPPORTED_TYPES[code]} (NIfTI datatype {code}): expected integer or "
            "floating-point intensities (convert colour or complex images to one real-valued channel)"
        )
    return nib.Nifti1Header if is_nifti1 else nib.Nifti2Header
