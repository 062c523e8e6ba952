"""Read one DICOM series — a folder, a .zip or a list of files — as a `Volume`, validated before any pixel is decoded.

The steps: files into memory (caps on count, bytes and zip ratio) → DICOM headers → one series chosen → its
geometry checked and sorted along the slice normal → the NIfTI caps (voxels, bytes, memory) → pixels decoded into
float32 with the rescale applied. The result is on a grid described by a NIfTI header (qform/sform code 1), so a
mask is saved exactly as for a NIfTI input.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..archive import MAX_FILES, ArchiveLimits, is_zip, read_members
from ..errors import InvalidVolumeError
from ..io import Volume
from ..memory import describe, require_memory
from ..nifti import check_header
from ..provenance import IgnoredSeries, SourceInfo
from .frames import frames_of
from .geometry import Stack, grid_header, stack_frames
from .instances import read_instances
from .pixels import check_pixel_format, decode_stack
from .series import DicomReference, Series, select_series

DicomSource = str | Path | Sequence[str | Path]
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._ -]+")


def load_dicom(
    source: DicomSource,
    *,
    series: str | None = None,
    max_voxels: int | None = None,
    max_decompressed_bytes: int | None = None,
    max_files: int = MAX_FILES,
    name: str | None = None,
) -> Volume:
    """Read one DICOM series as a float32 volume in its own voxel order (column, row, slice).

    Args:
        source: a folder holding the series (any depth; DICOMDIR and non-DICOM files are skipped), a .zip of it,
            or a list of DICOM files.
        series: the SeriesInstanceUID to read when the upload holds several volumetric series.
        max_voxels: refuse volumes with more voxels than this.
        max_decompressed_bytes: refuse uploads whose files inflate past this, and volumes whose stored pixels
            would (the NIfTI cap, applied to both).
        max_files: refuse uploads with more files than this.
        name: display name; defaults to the zip's or folder's name, else the series description.

    Returns:
        The volume; `volume.source` says which series was read and which were left out, and carries the
        headers a DICOM SEG needs.

    Raises:
        Unet3dError: the subclass says what is wrong (see docs/dicom.md for each refusal); the message says what to do.
    """
    chosen, ignored, stack = _read_series(source, series, ArchiveLimits(max_files, max_decompressed_bytes))
    dtype = check_pixel_format(chosen.instances)
    header = grid_header(stack.shape, stack.affine, dtype)
    check_header(header, max_voxels=max_voxels, max_decompressed_bytes=max_decompressed_bytes)
    require_memory(math.prod(stack.shape) * 4, f"reading {describe(stack.shape)}")
    data = decode_stack(stack, chosen.instances, dtype)  # finite: integers, and a rescale checked to fit float32
    header.set_data_dtype(np.float32)
    info = SourceInfo(
        format="dicom",
        series_uid=chosen.uid,
        modality=chosen.modality or None,
        images=len(chosen.instances),
        ignored_series=tuple(ignored),
        dicom=DicomReference(
            headers=tuple(i.header for i in chosen.instances),
            slices=tuple((frame.instance, frame.frame) for frame in stack.frames),
        ),
    )
    return Volume(data, header.get_best_affine(), header, stack.shape, name or _display_name(source, chosen), info)


def check_dicom(source: DicomSource, *, max_decompressed_bytes: int | None = None, max_files: int = MAX_FILES) -> None:
    """Refuse, before any file is read, an upload `load_dicom` would refuse for its size: more files than
    `max_files`, declared sizes past `max_decompressed_bytes`, a zip bomb given away by its index, unsafe zip entry
    names or links. A quick check before work is queued; `load_dicom` checks it all again as it reads.

    Raises:
        Unet3dError: as `unet3d.archive.read_members`.
    """
    members = read_members(source, ArchiveLimits(max_files=max_files, max_bytes=max_decompressed_bytes))
    close = getattr(members, "close", None)
    if close is not None:  # a generator that has not started: closing it reads nothing
        close()


@dataclass(frozen=True)
class DicomGrid:
    """The grid a DICOM series would be read on, found from its headers without decoding a pixel.

    Attributes:
        shape: `(I, J, K)` as `load_dicom` returns it.
        affine: its RAS affine, as `load_dicom` returns it.
        series_uid: the SeriesInstanceUID chosen.
    """

    shape: tuple[int, int, int]
    affine: np.ndarray
    series_uid: str


def inspect_dicom(
    source: DicomSource,
    *,
    series: str | None = None,
    max_decompressed_bytes: int | None = None,
    max_files: int = MAX_FILES,
) -> DicomGrid:
    """The grid `load_dicom(source, series=series)` would return, from the headers alone (no pixel is decoded;
    the files are read, so this costs about what parsing them does).

    Raises:
        Unet3dError: as `load_dicom`, for everything it checks before decoding.
    """
    chosen, _, stack = _read_series(source, series, ArchiveLimits(max_files, max_decompressed_bytes))
    header = grid_header(stack.shape, stack.affine, check_pixel_format(chosen.instances))
    return DicomGrid(stack.shape, header.get_best_affine(), chosen.uid)


def _read_series(
    source: DicomSource, series: str | None, limits: ArchiveLimits
) -> tuple[Series, list[IgnoredSeries], Stack]:
    """The chosen series, the ones left out, and its frames stacked on one checked grid."""
    instances, files = read_instances(read_members(source, limits))
    chosen, ignored = select_series(instances, series, files=files)
    del instances  # only the chosen series' bytes stay referenced
    if files == 1 and chosen.frames == 1:
        raise InvalidVolumeError(
            "the upload is a single DICOM image, one slice of a series: send the whole series, as the folder "
            "holding its files or a .zip of it (over HTTP: the .zip, or every file as its own 'file' part)"
        )
    return chosen, ignored, _stack(chosen)


def _stack(series: Series) -> Stack:
    multi_frame = [i for i in series.instances if i.attributes.frames > 1]
    if multi_frame and len(series.instances) > 1:
        raise InvalidVolumeError(
            f"{series.label()} mixes {len(multi_frame)} multi-frame objects with other images: unet3d reads one "
            "multi-frame object or a stack of single-frame images; export the series again"
        )
    frames = [frame for index, i in enumerate(series.instances) for frame in frames_of(i.header, i.attributes, index)]
    return stack_frames(frames)


def _display_name(source: DicomSource, series: Series) -> str:
    """The zip's or folder's own name (the user chose it), else the series description, made safe."""
    if isinstance(source, str | Path):
        path = Path(source)
        if path.is_dir() or is_zip(path):
            return _safe(path.name) or "dicom-series"
    return _safe(series.description) or "dicom-series"


def _safe(text: str) -> str:
    return _UNSAFE_NAME.sub("_", text).strip(" ._")[:64]
