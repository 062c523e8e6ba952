"""Series of a DICOM upload: grouped by SeriesInstanceUID, localizers set aside, one volumetric series chosen.

Messages name a series by its number, description, image count and UID, never by anything about the patient.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset

from ..errors import AmbiguousSeriesError, InvalidVolumeError, UnsupportedFormatError
from ..io import Volume
from ..nifti import MIN_AXIS_VOXELS
from ..provenance import IgnoredSeries
from .attributes import Attributes
from .instances import Instance, non_image_reason

_LISTED = 10  # series named in one message


@dataclass(frozen=True)
class DicomReference:
    """What a DICOM SEG of the volume references.

    Attributes:
        headers: the series' objects without pixel data, in the order the SEG lists them.
        slices: for each K slice of the volume, (index into `headers`, frame number in that object).
    """

    headers: tuple[Dataset, ...]
    slices: tuple[tuple[int, int], ...]


def dicom_reference(volume: Volume) -> DicomReference:
    """The source headers of a volume read from DICOM, which a DICOM SEG of it references.

    Raises:
        UnsupportedFormatError: the volume was not read from DICOM (a SEG could reference nothing).
    """
    reference = volume.source.dicom
    if volume.source.format != "dicom" or reference is None:
        raise UnsupportedFormatError(
            f"'{volume.name}' was not read from DICOM, and a DICOM SEG must reference the DICOM images it segments: "
            "save a NIfTI mask instead, or segment the DICOM series itself"
        )
    return reference


@dataclass
class Series:
    """The image objects of one series in an upload."""

    uid: str
    instances: list[Instance]

    @property
    def first(self) -> Attributes:
        """The attributes of its first object (series-level attributes are equal in all)."""
        return self.instances[0].attributes

    @property
    def description(self) -> str:
        """SeriesDescription, "" when absent."""
        return self.first.series_description

    @property
    def modality(self) -> str:
        """Modality, e.g. "MR"."""
        return self.first.modality

    @property
    def frames(self) -> int:
        """2D frames over all its objects."""
        return sum(i.attributes.frames for i in self.instances)

    def label(self) -> str:
        """For messages: "series 3 'T1 MPRAGE' (176 images, UID 1.2.3)"."""
        number = self.first.series_number or "?"
        count = len(self.instances)
        frames = f", {self.frames} frames" if self.frames != count else ""
        return (
            f"series {number} '{self.description}' ({count} image{'s' if count != 1 else ''}{frames}, UID {self.uid})"
        )

    def localizer_reason(self) -> str | None:
        """Why this looks like a localizer/scout, or None: ImageType LOCALIZER, or too few frames in any one
        orientation to make a volume (a 3-plane scout)."""
        if any("LOCALIZER" in (v.upper() for v in i.attributes.image_type) for i in self.instances):
            return "localizer (ImageType LOCALIZER)"
        if len(self.instances) == 1:
            largest = self.frames
        else:
            orientations = Counter(_orientation_key(i.attributes.orientation) for i in self.instances)
            largest = max(orientations.values())
        if largest < MIN_AXIS_VOXELS:
            return f"localizer (at most {largest} slices in one orientation)"
        return None

    def ignored(self, reason: str) -> IgnoredSeries:
        """This series as left out of the read, with `reason`."""
        return IgnoredSeries(self.uid, self.description, len(self.instances), reason)


def _orientation_key(orientation: tuple[str, ...] | None) -> tuple[float, ...]:
    try:
        return tuple(round(float(v), 2) for v in orientation or ())
    except ValueError:
        return ()


def group_series(instances: Sequence[Instance]) -> list[Series]:
    """Objects grouped by SeriesInstanceUID, in order of SeriesNumber."""
    groups: dict[str, list[Instance]] = {}
    for instance in instances:
        groups.setdefault(instance.attributes.series_uid, []).append(instance)
    series = [Series(uid, members) for uid, members in groups.items()]
    return sorted(series, key=lambda s: (_number(s.first.series_number), s.uid))


def _number(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return float("inf")


def select_series(
    instances: Sequence[Instance], series_uid: str | None, *, files: int
) -> tuple[Series, list[IgnoredSeries]]:
    """The one volumetric series to read, and every other series with the reason it was left out.

    Args:
        instances: the DICOM objects of the upload.
        series_uid: the SeriesInstanceUID to read; None picks the only volumetric series.
        files: files in the upload, for the message when none is DICOM.

    Raises:
        UnsupportedFormatError: no file is DICOM.
        InvalidVolumeError: no object holds an image, the upload mixes patients, or `series_uid` is not in it.
        AmbiguousSeriesError: several volumetric series and no `series_uid`.
    """
    if not instances:
        raise UnsupportedFormatError(
            f"none of the {files} file{'s' if files != 1 else ''} is DICOM: send a folder or .zip of one DICOM "
            "series (or a NIfTI volume)"
        )
    check_one_patient(instances)
    images = [i for i in instances if non_image_reason(i) is None]
    ignored = _non_images(instances)
    if not images:
        reasons = sorted({str(non_image_reason(i)) for i in instances})
        raise InvalidVolumeError(
            f"the upload holds no image to segment, only {' and '.join(reasons)}: send the image series itself "
            "(a SEG or RT structure set is a result, not a scan)"
        )
    groups = group_series(images)
    if series_uid is not None:
        chosen = _pick(groups, series_uid.strip())
        return chosen, ignored + [s.ignored("not selected") for s in groups if s is not chosen]
    localizers = {s.uid: s.localizer_reason() for s in groups}
    volumetric = [s for s in groups if localizers[s.uid] is None]
    if len(volumetric) > 1:
        raise AmbiguousSeriesError(
            f"the upload holds {len(volumetric)} volumetric series: {_listing(volumetric)}. Choose one with "
            "series=UID (CLI: --series UID; HTTP: ?series=UID), or upload only that series"
        )
    if not volumetric and len(groups) > 1:
        raise InvalidVolumeError(
            f"the upload holds only localizer/scout series ({_listing(groups)}): send the 3D series itself"
        )
    chosen = volumetric[0] if volumetric else groups[0]  # a lone small series: its geometry check says why not
    return chosen, ignored + [s.ignored(localizers[s.uid] or "") for s in groups if s is not chosen]


def _pick(groups: list[Series], uid: str) -> Series:
    for series in groups:
        if series.uid == uid:
            return series
    raise InvalidVolumeError(
        f"the upload holds no image series with UID {uid[:80]!r}; it holds: {_listing(groups)}. Pass one of these UIDs"
    )


def _listing(groups: Sequence[Series]) -> str:
    shown = "; ".join(series.label() for series in groups[:_LISTED])
    return shown + (f"; and {len(groups) - _LISTED} more" if len(groups) > _LISTED else "")


def _non_images(instances: Sequence[Instance]) -> list[IgnoredSeries]:
    """Non-image objects, one entry per series and reason."""
    counts: Counter[tuple[str, str, str]] = Counter()
    for instance in instances:
        reason = non_image_reason(instance)
        if reason is not None:
            attributes = instance.attributes
            counts[(attributes.series_uid, attributes.series_description, f"not an image: {reason}")] += 1
    return [IgnoredSeries(uid, description, n, reason) for (uid, description, reason), n in sorted(counts.items())]


def check_one_patient(instances: Sequence[Instance]) -> None:
    """Refuse an upload whose objects belong to more than one patient (the identifiers are never quoted)."""
    patients = {instance.attributes.patient for instance in instances}
    if len(patients) > 1:
        raise InvalidVolumeError(
            f"the upload mixes {len(patients)} patients (their IDs, names or birth dates differ): send one "
            "patient's series at a time"
        )
