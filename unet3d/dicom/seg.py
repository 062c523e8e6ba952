"""A label mask as a DICOM Segmentation (SEG) of the series it came from, and a SEG read back as a label mask.

Written with highdicom: one segment per non-background class of the model card (name, colour), the algorithm
identified (model id, revision, weights sha256), frames aligned to the source images (one per source frame and
segment, empty ones included, so the SEG alone describes the whole referenced grid). highdicom copies from the
source only the Patient and General Study module attributes a SEG must carry, and credits the source's acquisition
equipment, from which the site details (institution, station, serial number) are dropped here.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from ..atomic import replacing
from ..card import ModelCard
from ..errors import InvalidVolumeError, UnreadableVolumeError, UnsupportedFormatError, VolumeTooLargeError
from ..hub import ModelSource
from ..io import Volume
from ..provenance import SourceInfo
from ..stats import label_problem
from .geometry import LPS_TO_RAS, grid_header
from .series import DicomReference, dicom_reference

logger = logging.getLogger(__name__)

SERIES_NUMBER = 9900  # viewers sort series by number: the SEG lists after the scanner's own
LOCAL_SCHEME = "99UNET3D"  # a private coding scheme (DICOM PS3.16 "99" prefix): classes have no SNOMED codes yet
_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")
_SITE_DETAILS = (
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "StationName",
    "DeviceSerialNumber",
)


def write_dicom_seg(mask: np.ndarray, volume: Volume, card: ModelCard, source: ModelSource, path: str | Path) -> Path:
    """Write `mask` as a DICOM SEG of the series `volume` was read from.

    Args:
        mask: `(I, J, K)` class indices on the volume's grid (0 = background), at most `card.num_classes - 1`.
        volume: the volume returned by `load_dicom` (it carries the source headers).
        card: the model card: class names and `#rrggbb` colours.
        source: the model that made the mask (id, revision, weights sha256).
        path: the .dcm file to write, or an existing folder (then `<folder>/<stem>_seg.dcm`); missing parent
            folders are created.

    Returns:
        The path written.

    Raises:
        UnsupportedFormatError: the volume did not come from DICOM.
        InvalidVolumeError: the mask's shape or labels do not fit the volume or the card.
    """
    reference = dicom_reference(volume)
    if mask.shape != volume.shape:
        raise InvalidVolumeError(f"mask shape {mask.shape} differs from the input shape {volume.shape}")
    problem = label_problem(mask, num_classes=card.num_classes)
    if problem is not None:
        raise InvalidVolumeError(f"the mask {problem}: a SEG holds the card's {card.num_classes} classes only")
    seg = hd.seg.Segmentation(
        source_images=list(reference.headers),
        pixel_array=_source_frames(np.asarray(mask, dtype=np.uint8), reference),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_segments(card, source),
        series_instance_uid=generate_uid(),
        series_number=SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="unet3d",
        manufacturer_model_name=card.name[:64],
        software_versions=f"unet3d {_version()}",
        device_serial_number=source.sha256[:16] or "unknown",  # type 1: the weights' digest names this "device"
        series_description=f"{card.name} segmentation"[:64],
        content_label="UNET3D",
        content_description=f"{card.name} {card.version}: research use, not for clinical use"[:64],
        omit_empty_frames=False,  # every source frame present: the SEG alone spans the referenced grid
    )
    _drop_site_details(seg)
    target = Path(path) / f"{volume.stem}_seg.dcm" if Path(path).is_dir() else Path(path)
    with replacing(target) as file:  # a killed run leaves no half SEG under the final name (a resumed batch trusts it)
        seg.save_as(file)
    return target


def _drop_site_details(seg: hd.seg.Segmentation) -> None:
    """highdicom credits the source's acquisition equipment with where it stands (institution, address, station,
    serial number): nothing a SEG needs, and it narrows down who the patient is."""
    for item in seg.get("ContributingEquipmentSequence", []):
        for keyword in _SITE_DETAILS:
            if keyword in item:
                delattr(item, keyword)


def _source_frames(mask: np.ndarray, reference: DicomReference) -> np.ndarray:
    """The mask as `(frames, rows, columns)` in the order highdicom pairs with the source: one frame per
    single-frame image (in `headers` order), or the frames of one multi-frame image in frame order."""
    frames = np.empty((len(reference.slices), mask.shape[1], mask.shape[0]), dtype=np.uint8)
    is_multi_frame = len(reference.headers) == 1 and len(reference.slices) > 1
    for k, (instance, frame) in enumerate(reference.slices):
        frames[frame if is_multi_frame else instance] = mask[:, :, k].T  # (I, J) = (column, row) → (row, column)
    return frames


def _segments(card: ModelCard, source: ModelSource) -> list[hd.seg.SegmentDescription]:
    algorithm = hd.AlgorithmIdentificationSequence(
        name=_model_name(source),
        family=codes.cid7162.ArtificialIntelligence,
        version=source.revision[:64],
        source="unet3d",
        parameters={"weights_sha256": source.sha256, "card_version": card.version},
    )
    return [
        hd.seg.SegmentDescription(
            segment_number=info.index,
            segment_label=info.name[:64],
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=hd.sr.CodedConcept(f"class-{info.index}", LOCAL_SCHEME, info.name[:64]),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            display_color=_color(info.color),
        )
        for info in card.classes[1:]
    ]


def _model_name(source: ModelSource) -> str:
    """A Hub repo id as it is; a local folder by its own name (its full path is nobody else's business)."""
    name = source.id if source.revision != "local" else Path(source.id).name or source.id
    return name[-64:]


def _color(color: str) -> hd.color.CIELabColor | None:
    if not _HEX.match(color):
        return None
    red, green, blue = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return hd.color.CIELabColor.from_rgb(red, green, blue)


def _version() -> str:
    from .. import __version__  # imported late: unet3d/__init__ imports the modules that import this one

    return __version__


def seg_references(path: str | Path) -> str | None:
    """The SeriesInstanceUID a whole DICOM SEG file segments, or None when the file is missing, not a SEG, or cut
    short (its pixel data shorter than its frames need). Headers and packed frames are read, nothing is unpacked."""
    try:
        seg = pydicom.dcmread(path)
        frames = int(seg.get("NumberOfFrames", 1) or 1)
        needed = math.ceil(frames * int(seg.Rows) * int(seg.Columns) * int(seg.BitsAllocated) / 8)
        whole = seg.Modality == "SEG" and len(seg.PixelData) >= needed
        referenced = [str(item.SeriesInstanceUID) for item in seg.ReferencedSeriesSequence]
    except (InvalidDicomError, OSError, AttributeError, KeyError, TypeError, ValueError, EOFError):
        return None
    return referenced[0] if whole and len(referenced) == 1 else None


def read_dicom_seg(
    path: str | Path,
    *,
    name: str | None = None,
    max_voxels: int | None = None,
    max_decompressed_bytes: int | None = None,
) -> Volume:
    """Read a DICOM SEG as a label mask on the grid of the frames it holds (voxel value = segment number).

    A SEG written by `write_dicom_seg` holds every source frame, so this is the referenced series' grid, equal
    (`unet3d.io.same_grid`) to what `load_dicom` reads from that series. A SEG that omits empty frames yields the
    grid spanning the frames it has.

    Raises:
        UnsupportedFormatError: the file is not a DICOM SEG.
        VolumeTooLargeError: its grid has more voxels than `max_voxels`, or more bytes than `max_decompressed_bytes`
            once unpacked (checked before it is unpacked).
        InvalidVolumeError: the segments overlap (a label mask holds one class per voxel), or the frames do not
            form a regular 3D grid.
    """
    try:
        seg = hd.seg.segread(path)
    except (InvalidDicomError, ValueError, AttributeError, KeyError, TypeError) as e:
        raise UnsupportedFormatError(f"'{Path(path).name}' is not a readable DICOM Segmentation (SEG)") from e
    except OSError as e:
        raise UnreadableVolumeError(f"cannot read '{Path(path).name}': {e.strerror or 'a read error'}") from e
    _check_size(seg, max_voxels=max_voxels, max_decompressed_bytes=max_decompressed_bytes)
    try:
        volume = seg.get_volume(combine_segments=True, relabel=False, dtype=np.uint8)
    except (ValueError, RuntimeError) as e:
        raise InvalidVolumeError(
            f"'{Path(path).name}' cannot be read as one label mask ({str(e).splitlines()[0][:120]}): its segments "
            "overlap or its frames do not form one 3D grid"
        ) from e
    return _as_volume(volume.array, volume.affine, name or Path(path).name, str(seg.SeriesInstanceUID))


def _check_size(seg: hd.seg.Segmentation, *, max_voxels: int | None, max_decompressed_bytes: int | None) -> None:
    """Apply the NIfTI caps to the grid the SEG's frames span (one slice per distinct frame position), unpacked."""
    frames = int(seg.get("NumberOfFrames", 1) or 1)
    try:
        positions = {
            tuple(float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient)
            for item in seg.PerFrameFunctionalGroupsSequence
        }
        slices = len(positions) or frames
    except (AttributeError, IndexError, TypeError, ValueError):
        slices = frames
    shape = (int(seg.get("Columns", 1) or 1), int(seg.get("Rows", 1) or 1), slices)
    voxels = math.prod(shape)  # one byte each once unpacked
    for limit in (max_voxels, max_decompressed_bytes):
        if limit is not None and voxels > limit:
            raise VolumeTooLargeError(
                f"the SEG spans {voxels} voxels ({'×'.join(map(str, shape))}), more than the limit of {limit}: send "
                "a SEG of a smaller series, or raise the limit"
            )


def _as_volume(array: np.ndarray, affine_lps: np.ndarray, name: str, series_uid: str) -> Volume:
    """highdicom's `(slice, row, column)` array with its LPS affine → `(column, row, slice)` RAS, slices ascending
    along the normal of the rows and columns (the order `load_dicom` sorts them in)."""
    data = np.ascontiguousarray(np.transpose(array, (2, 1, 0))).astype(np.float32)
    lps = affine_lps[:, [2, 1, 0, 3]]
    normal = np.cross(lps[:3, 0], lps[:3, 1])
    if data.shape[2] > 1 and float(lps[:3, 2] @ normal) < 0:
        data = np.ascontiguousarray(data[:, :, ::-1])
        lps[:3, 3] += lps[:3, 2] * (data.shape[2] - 1)
        lps[:3, 2] = -lps[:3, 2]
    affine = LPS_TO_RAS @ lps
    header = grid_header(data.shape, affine, np.float32)
    info = SourceInfo(format="dicom", series_uid=series_uid, modality="SEG", images=1)
    return Volume(data, header.get_best_affine(), header, data.shape, name, info)
