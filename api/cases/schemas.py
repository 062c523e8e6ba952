"""The review records as the store returns them and the HTTP API answers them (every field described in OpenAPI)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

Verdict = Literal["accepted", "needs_correction", "rejected"]
Status = Literal["unreviewed", "accepted", "needs_correction", "rejected"]
Source = Literal["prediction", "upload", "import", "correction"]
SortKey = Literal["id", "-id", "name", "-name", "updated", "-updated", "status", "-status", "qc", "-qc"]
VERDICTS: tuple[str, ...] = ("accepted", "needs_correction", "rejected")
STATUSES: tuple[str, ...] = ("unreviewed", *VERDICTS)
MAX_NOTE = 10_000
MAX_NAME = 100


class ClassVolume(BaseModel):
    """Size of one class in a mask revision."""

    index: int = Field(description="the class's label value in the mask (0 = background)")
    name: str = Field(description="class name (the model card's, or class_N)")
    voxels: int = Field(description="voxels with this label")
    volume_ml: float = Field(description="voxels × voxel volume, in millilitres")


class ClassChange(BaseModel):
    """How a revision changed one class against its parent."""

    added: int = Field(description="voxels that became this class")
    removed: int = Field(description="voxels that were this class and no longer are")


class MaskRevision(BaseModel):
    """One stored mask of a case, with its provenance."""

    revision: int = Field(description="0 for the prediction or imported mask, then 1, 2, ... per saved correction")
    parent: int | None = Field(description="the revision this one was made from; null for revision 0")
    source: Source = Field(description="prediction, upload or import (revision 0), correction (later ones)")
    author: str = Field(description="who made it: a reviewer's name, or model:<id> for a prediction")
    created_at: datetime = Field(description="when it was saved (UTC)")
    sha256: str = Field(description="SHA-256 of the stored .nii.gz (content address)")
    changed_voxels: dict[str, ClassChange] = Field(
        description="per class index (as a string) that changed: voxels added and removed against the parent; "
        "empty for revision 0"
    )
    class_volumes: list[ClassVolume] = Field(description="one entry per class, background included")


class Review(BaseModel):
    """One recorded verdict (every verdict is kept; the latest is the case's status)."""

    verdict: Verdict = Field(description="accepted, needs_correction or rejected")
    score: int | None = Field(description="optional quality score 1 (poor) to 5 (excellent)")
    note: str = Field(description="free-text note (may be empty)")
    reviewer: str = Field(description="who recorded it")
    created_at: datetime = Field(description="when it was recorded (UTC)")
    revision: int = Field(description="the mask revision that was current when the verdict was given")
    version: int = Field(description="the case version this verdict created")


class CaseSummary(BaseModel):
    """A row of the worklist."""

    id: int = Field(description="the case id (in /v1/cases/{id})")
    name: str = Field(description="unique case name, by default the volume's file name without .nii/.nii.gz")
    status: Status = Field(description="the latest verdict, or unreviewed before the first")
    reviewer: str | None = Field(description="who gave the latest verdict; null while unreviewed")
    score: int | None = Field(description="the latest verdict's score, if any")
    qc_score: float | None = Field(description="the prediction's QC score in [0, 1] when it had one")
    qc_warnings: list[str] = Field(description="QC warnings of the prediction or batch run (empty: none)")
    class_volumes: list[ClassVolume] = Field(description="class sizes in the latest mask revision")
    latest_revision: int = Field(description="the newest mask revision")
    version: int = Field(description="increases with every verdict and revision; the ETag is built from it")
    source: Source = Field(description="where revision 0 came from: prediction, upload or import")
    created_at: datetime = Field(description="when the case was created (UTC)")
    updated_at: datetime = Field(description="the last change: a verdict or a mask revision (UTC)")


class CaseDetail(CaseSummary):
    """A case with its volume's geometry, every mask revision and every verdict."""

    note: str = Field(description="the latest verdict's note (empty when none)")
    etag: str = Field(description="the value to send as If-Match with a verdict or a new mask revision")
    volume_name: str = Field(description="the volume's original file name (display only)")
    volume_sha256: str = Field(description="SHA-256 of the stored volume file")
    shape: list[int] = Field(description="voxel grid (I, J, K)")
    spacing_mm: list[float] = Field(description="voxel size along I, J, K in mm")
    classes: list[str] = Field(description="class names in label order, background first")
    model: dict[str, str] | None = Field(description="id, revision, sha256 of the model that predicted revision 0")
    revisions: list[MaskRevision] = Field(description="every mask revision, oldest first")
    reviews: list[Review] = Field(description="every verdict, oldest first")


class CasePage(BaseModel):
    """One page of the worklist."""

    total: int = Field(description="cases matching the filters, over all pages")
    limit: int = Field(description="the page size asked for")
    offset: int = Field(description="how many matching cases come before this page")
    next_offset: int | None = Field(description="the offset of the next page; null on the last page")
    cases: list[CaseSummary] = Field(description="the cases of this page, in the requested order")


class ReviewRequest(BaseModel):
    """The body of PUT /v1/cases/{id}/review."""

    verdict: Verdict = Field(description="accepted, needs_correction or rejected")
    score: int | None = Field(default=None, ge=1, le=5, description="optional quality score 1 (poor) to 5 (excellent)")
    note: str = Field(default="", max_length=MAX_NOTE, description="optional free-text note")
    reviewer: str | None = Field(
        default=None,
        max_length=MAX_NAME,
        description="who gives the verdict: required without UNET3D_USERS_FILE; with it, the signed-in user (a "
        "different name is refused with 403)",
    )
