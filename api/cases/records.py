"""Database rows → the records the API answers (schemas.py), and the class volumes both are built from."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from .schemas import CaseDetail, CaseSummary, ClassChange, ClassVolume, MaskRevision, Review


def class_volumes(classes: Sequence[str], voxels: Sequence[int], voxel_volume_ml: float) -> list[dict[str, Any]]:
    """One entry per class, `{index, name, voxels, volume_ml}` (volume rounded to the µL)."""
    return [
        {"index": index, "name": name, "voxels": int(count), "volume_ml": round(count * voxel_volume_ml, 6)}
        for index, (name, count) in enumerate(zip(classes, voxels, strict=True))
    ]


def etag(case_id: int, version: int) -> str:
    """The strong ETag of a case at a version, e.g. `"12.3"` (the id guards against one case's tag on another)."""
    return f'"{case_id}.{version}"'


def utc(moment: datetime) -> datetime:
    """SQLite hands timestamps back without their zone; every stored time is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def case_summary(row: Any) -> CaseSummary:
    """A worklist row."""
    return CaseSummary(
        id=row.id,
        name=row.name,
        status=row.status,
        reviewer=row.reviewer,
        score=row.score,
        qc_score=row.qc_score,
        qc_warnings=list(row.qc_warnings or []),
        class_volumes=[ClassVolume.model_validate(v) for v in row.class_volumes],
        latest_revision=row.latest_revision,
        version=row.version,
        source=row.source,
        created_at=utc(row.created_at),
        updated_at=utc(row.updated_at),
    )


def mask_revision(row: Any, classes: Sequence[str], voxel_volume_ml: float) -> MaskRevision:
    """A revision row with its class volumes."""
    return MaskRevision(
        revision=row.revision,
        parent=row.parent,
        source=row.source,
        author=row.author,
        created_at=utc(row.created_at),
        sha256=row.sha256,
        changed_voxels={k: ClassChange.model_validate(v) for k, v in (row.changed_voxels or {}).items()},
        class_volumes=[
            ClassVolume.model_validate(v) for v in class_volumes(classes, row.class_voxels, voxel_volume_ml)
        ],
    )


def review(row: Any) -> Review:
    """A verdict row."""
    return Review(
        verdict=row.verdict,
        score=row.score,
        note=row.note,
        reviewer=row.reviewer,
        created_at=utc(row.created_at),
        revision=row.revision,
        version=row.case_version,
    )


def case_detail(row: Any, revision_rows: Sequence[Any], review_rows: Sequence[Any]) -> CaseDetail:
    """A case with its geometry, revisions and verdicts."""
    summary = case_summary(row)
    return CaseDetail(
        **summary.model_dump(),
        note=row.note,
        etag=etag(row.id, row.version),
        volume_name=row.volume_name,
        volume_sha256=row.volume_sha256,
        shape=list(row.shape),
        spacing_mm=list(row.spacing_mm),
        classes=list(row.classes),
        model=row.model,
        revisions=[mask_revision(r, row.classes, row.voxel_volume_ml) for r in revision_rows],
        reviews=[review(r) for r in review_rows],
    )
