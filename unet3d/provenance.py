"""Where a volume came from: the file format and, for DICOM, the series read and the ones left out.

`SourceInfo.as_dict()` is what summaries report as `source`. It never holds a patient's name, ID or birth date: the
DICOM headers a SEG needs travel beside it in `dicom` (not compared, not printed, never serialised).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # the DICOM modules import this one: a runtime import would be circular
    from .dicom.series import DicomReference

SourceFormat = Literal["nifti", "dicom"]


@dataclass(frozen=True)
class IgnoredSeries:
    """A series in a DICOM upload that was not read, and why.

    Attributes:
        uid: its SeriesInstanceUID.
        description: its SeriesDescription ("" when absent).
        images: DICOM objects (files) it holds.
        reason: why it was left out, e.g. "localizer", "not selected", "no image (Basic Text SR Storage)".
    """

    uid: str
    description: str
    images: int
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """`{uid, description, images, reason}`, JSON-able."""
        return {"uid": self.uid, "description": self.description, "images": self.images, "reason": self.reason}


@dataclass(frozen=True)
class SourceInfo:
    """What was read to make a volume.

    Attributes:
        format: "nifti" or "dicom".
        series_uid: the DICOM SeriesInstanceUID read (None for NIfTI).
        modality: the DICOM Modality, e.g. "MR" or "CT" (None for NIfTI).
        images: DICOM objects (files) read: one per slice, or one multi-frame object (None for NIfTI).
        ignored_series: the other series of the upload, each with the reason it was left out.
        dicom: the source headers (pixel data dropped) and the slice each frame became, for writing a DICOM SEG.
            They hold patient data: never logged, printed or serialised.
    """

    format: SourceFormat = "nifti"
    series_uid: str | None = None
    modality: str | None = None
    images: int | None = None
    ignored_series: tuple[IgnoredSeries, ...] = ()
    dicom: DicomReference | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """The summary's `source` field: `{format, series_uid, modality, images, ignored_series}`."""
        return {
            "format": self.format,
            "series_uid": self.series_uid,
            "modality": self.modality,
            "images": self.images,
            "ignored_series": [series.as_dict() for series in self.ignored_series],
        }


NIFTI_SOURCE = SourceInfo()
