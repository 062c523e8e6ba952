"""The case store: SQL reads and compare-and-set writes of cases, mask revisions and verdicts.

Every change to a case is one transaction that starts with `UPDATE cases ... WHERE id = :id AND version = :expected`
and bumps the version: when another change landed first, no row matches, nothing is written and the caller gets
`PreconditionFailedError` (412). A unique constraint backs each rule up (one verdict per case version, one revision
per number), and whatever the database refuses becomes a 409, never a 500.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, Row, func, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from ..errors import CaseNotFoundError, ConflictError, PreconditionFailedError, StorageUnavailableError
from .database import describe, reading, writing
from .records import case_detail, case_summary, class_volumes, mask_revision
from .schemas import CaseDetail, CasePage, MaskRevision, SortKey, Status, Verdict
from .tables import cases, mask_revisions, reviews

_SORT_COLUMNS = {"id": cases.c.id, "name": cases.c.name, "updated": cases.c.updated_at, "status": cases.c.status,
                 "qc": cases.c.qc_score}  # fmt: skip


@dataclass(frozen=True)
class NewMask:
    """A mask revision to store: its file's digest, who made it, and how it differs from its parent."""

    sha256: str
    author: str
    source: str
    class_voxels: list[int]
    changed_voxels: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class NewCase:
    """A case to create, with its revision 0."""

    name: str
    volume_sha256: str
    volume_suffix: str
    volume_name: str
    shape: list[int]
    spacing_mm: list[float]
    voxel_volume_ml: float
    classes: list[str]
    mask: NewMask
    qc_score: float | None = None
    qc_warnings: list[str] = field(default_factory=list)
    model: dict[str, str] | None = None


@dataclass(frozen=True)
class CaseQuery:
    """Filters, order and page of the worklist."""

    status: Status | None = None
    reviewer: str | None = None
    sort: SortKey = "id"
    limit: int = 50
    offset: int = 0


class CaseStore:
    """Cases in the database behind `engine` (see database.open_engine; the schema must be migrated)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create_cases(self, new: Sequence[NewCase]) -> list[int]:
        """Create cases (each with its revision 0) in one transaction; returns their ids.

        Raises:
            ConflictError: a name is taken (nothing is created).
        """
        now = _now()
        with self._guard(), writing(self.engine) as connection:
            ids = []
            for case in new:
                ids.append(self._insert_case(connection, case, now))
            return ids

    def _insert_case(self, connection: Connection, case: NewCase, now: datetime) -> int:
        mask = case.mask
        values = {
            "name": case.name, "volume_sha256": case.volume_sha256, "volume_suffix": case.volume_suffix,
            "volume_name": case.volume_name, "shape": case.shape, "spacing_mm": case.spacing_mm,
            "voxel_volume_ml": case.voxel_volume_ml, "classes": case.classes, "qc_score": case.qc_score,
            "qc_warnings": case.qc_warnings, "source": mask.source, "model": case.model, "created_at": now,
            "updated_at": now, "status": "unreviewed", "note": "", "version": 1, "latest_revision": 0,
            "class_volumes": class_volumes(case.classes, mask.class_voxels, case.voxel_volume_ml),
        }  # fmt: skip
        try:
            with connection.begin_nested():
                case_id = int(connection.execute(insert(cases).values(values).returning(cases.c.id)).scalar_one())
        except IntegrityError as e:
            raise ConflictError(f"a case named '{case.name}' exists already: choose another name") from e
        connection.execute(insert(mask_revisions).values(_revision_values(case_id, 0, None, mask, now)))
        return case_id

    def existing_names(self, names: Sequence[str]) -> set[str]:
        """Which of `names` are taken."""
        with self._guard(), reading(self.engine) as connection:
            found: set[str] = set()
            for start in range(0, len(names), 500):
                chunk = list(names[start : start + 500])
                found.update(connection.execute(select(cases.c.name).where(cases.c.name.in_(chunk))).scalars())
            return found

    def get_case(self, case_id: int) -> CaseDetail:
        """A case with every revision and verdict.

        Raises:
            CaseNotFoundError: no case has this id.
        """
        with self._guard(), reading(self.engine) as connection:
            row = connection.execute(select(cases).where(cases.c.id == case_id)).one_or_none()
            if row is None:
                raise CaseNotFoundError(f"no case has id {case_id}: list them with GET /v1/cases")
            revision_rows = connection.execute(
                select(mask_revisions).where(mask_revisions.c.case_id == case_id).order_by(mask_revisions.c.revision)
            ).all()
            review_rows = connection.execute(
                select(reviews).where(reviews.c.case_id == case_id).order_by(reviews.c.id)
            ).all()
        return case_detail(row, revision_rows, review_rows)

    def list_cases(self, query: CaseQuery) -> CasePage:
        """One page of cases matching `query`, and how many match in all."""
        conditions = []
        if query.status is not None:
            conditions.append(cases.c.status == query.status)
        if query.reviewer is not None:
            conditions.append(cases.c.reviewer == query.reviewer)
        column = _SORT_COLUMNS[query.sort.lstrip("-")]
        descending = query.sort.startswith("-")
        order = [column.desc() if descending else column.asc(), cases.c.id.desc() if descending else cases.c.id]
        listed = [c for c in cases.c if c.name not in ("shape", "spacing_mm", "classes", "model", "volume_sha256")]
        with self._guard(), reading(self.engine) as connection:
            total = int(connection.execute(select(func.count()).select_from(cases).where(*conditions)).scalar_one())
            rows = connection.execute(
                select(*listed).where(*conditions).order_by(*order).limit(query.limit).offset(query.offset)
            ).all()
        after = query.offset + len(rows)
        return CasePage(
            total=total, limit=query.limit, offset=query.offset, next_offset=after if after < total else None,
            cases=[case_summary(row) for row in rows],
        )  # fmt: skip

    def revision(self, case_id: int, number: int) -> MaskRevision:
        """One mask revision of a case.

        Raises:
            CaseNotFoundError: no such case or revision.
        """
        with self._guard(), reading(self.engine) as connection:
            row = connection.execute(
                select(mask_revisions, cases.c.classes, cases.c.voxel_volume_ml)
                .join(cases, cases.c.id == mask_revisions.c.case_id)
                .where(mask_revisions.c.case_id == case_id, mask_revisions.c.revision == number)
            ).one_or_none()
        if row is None:
            raise CaseNotFoundError(f"case {case_id} has no mask revision {number}: GET /v1/cases/{case_id} lists them")
        return mask_revision(row, row.classes, row.voxel_volume_ml)

    def record_review(
        self, case_id: int, expected_version: int, *, verdict: Verdict, score: int | None, note: str, reviewer: str
    ) -> None:
        """Record a verdict made from `expected_version`; it becomes the case's status.

        Raises:
            CaseNotFoundError: no case has this id.
            PreconditionFailedError: the case changed since `expected_version`.
        """
        now = _now()
        changes = {"status": verdict, "score": score, "note": note, "reviewer": reviewer}
        with self._guard(), writing(self.engine) as connection:
            version, revision = self._advance(connection, case_id, expected_version, changes, now)
            connection.execute(
                insert(reviews).values(
                    case_id=case_id,
                    verdict=verdict,
                    score=score,
                    note=note,
                    reviewer=reviewer,
                    revision=revision,
                    case_version=version,
                    created_at=now,
                )
            )

    def add_revision(
        self, case_id: int, expected_version: int, mask: NewMask, *, parent: int, volumes: list[dict[str, Any]]
    ) -> int:
        """Store a corrected mask made from revision `parent` at `expected_version`; returns its number.

        Raises:
            CaseNotFoundError: no case has this id.
            PreconditionFailedError: the case changed since `expected_version`.
        """
        now = _now()
        changes = {"latest_revision": parent + 1, "class_volumes": volumes}
        with self._guard(), writing(self.engine) as connection:
            _, number = self._advance(connection, case_id, expected_version, changes, now)
            connection.execute(insert(mask_revisions).values(_revision_values(case_id, number, parent, mask, now)))
        return number

    def _advance(
        self, connection: Connection, case_id: int, expected: int, changes: dict[str, Any], now: datetime
    ) -> tuple[int, int]:
        """The compare-and-set: apply `changes` and bump the version only if it is still `expected`."""
        statement = (
            update(cases)
            .where(cases.c.id == case_id, cases.c.version == expected)
            .values(**changes, version=cases.c.version + 1, updated_at=now)
            .returning(cases.c.version, cases.c.latest_revision)
        )
        row = connection.execute(statement).one_or_none()
        if row is not None:
            return int(row.version), int(row.latest_revision)
        current = connection.execute(select(cases.c.version).where(cases.c.id == case_id)).scalar_one_or_none()
        if current is None:
            raise CaseNotFoundError(f"no case has id {case_id}: list them with GET /v1/cases")
        raise stale(case_id, expected, current)

    def review_rows(self, *, history: bool) -> list[Row[Any]]:
        """Rows for reviews.csv: every case with its latest verdict, or (history) every verdict, in id order."""
        with self._guard(), reading(self.engine) as connection:
            if history:
                statement = (
                    select(reviews, cases.c.name, cases.c.qc_warnings)
                    .join(cases, cases.c.id == reviews.c.case_id)
                    .order_by(reviews.c.case_id, reviews.c.id)
                )
            else:
                reviewed_at = (
                    select(func.max(reviews.c.created_at)).where(reviews.c.case_id == cases.c.id).scalar_subquery()
                )
                statement = select(cases, reviewed_at.label("reviewed_at")).order_by(cases.c.id)
            return list(connection.execute(statement))

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except IntegrityError as e:
            raise ConflictError(f"the change contradicts what is stored ({describe(e)}): reload and retry") from e
        except OperationalError as e:
            raise StorageUnavailableError(f"the review database is unavailable ({describe(e)}): retry soon") from e
        except SQLAlchemyError as e:
            raise StorageUnavailableError(f"the review database refused the request ({describe(e)})") from e


def stale(case_id: int, expected: int, current: int) -> PreconditionFailedError:
    """The 412 for a change made from an old version of a case."""
    return PreconditionFailedError(
        f"case {case_id} changed since you loaded it (your version {expected}, now {current}): "
        f"reload the case (GET /v1/cases/{case_id}) to see what changed, then try again with its new ETag"
    )


def check_version(case: CaseDetail, expected: int) -> None:
    """Refuse early (before any file work) a change made from an old version; the commit checks again."""
    if case.version != expected:
        raise stale(case.id, expected, case.version)


def _revision_values(case_id: int, number: int, parent: int | None, mask: NewMask, now: datetime) -> dict[str, Any]:
    return {
        "case_id": case_id, "revision": number, "parent": parent, "source": mask.source, "author": mask.author,
        "sha256": mask.sha256, "changed_voxels": mask.changed_voxels, "class_voxels": mask.class_voxels,
        "created_at": now,
    }  # fmt: skip


def _now() -> datetime:
    return datetime.now(UTC)
