"""The case store on SQLite and on a real PostgreSQL server: schema, records, compare-and-set, constraints."""

from __future__ import annotations

import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import insert

from api.cases.database import migrate, open_engine, writing
from api.cases.service import CaseService, Provenance
from api.cases.store import CaseQuery
from api.cases.tables import metadata, reviews
from api.errors import CaseNotFoundError, ConflictError, PreconditionFailedError
from unet3d.errors import InvalidVolumeError

SHAPE = (12, 10, 8)


def write(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


def blob_mask(label: int = 1) -> np.ndarray:
    mask = np.zeros(SHAPE, np.uint8)
    mask[3:7, 3:6, 2:5] = label
    return mask


def make_case(cases: CaseService, tmp_path: Path, name: str, mask: np.ndarray | None = None, **provenance) -> int:
    folder = tmp_path / f"in-{name}"
    folder.mkdir(exist_ok=True)
    volume = write(folder / f"{name}.nii.gz", np.random.default_rng(len(name)).normal(size=SHAPE).astype(np.float32))
    mask_path = write(folder / f"{name}_mask.nii.gz", blob_mask() if mask is None else mask)
    detail = cases.create_from_mask(
        volume, volume.name, mask_path, mask_path.name, name=name, card_names=["background", "shell", "core"],
        provenance=Provenance(author=provenance.pop("author", "importer"), **provenance),
    )  # fmt: skip
    return detail.id


def test_migrations_build_exactly_the_declared_schema_and_rerun_as_no_ops(database_url):
    engine = open_engine(database_url)
    migrate(engine)
    migrate(engine)
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), metadata) == []
    engine.dispose()


def test_a_new_case_is_unreviewed_with_revision_zero_and_its_class_volumes(cases, tmp_path):
    case_id = make_case(cases, tmp_path, "t1", qc_warnings=("low contrast",), qc_score=0.4)
    case = cases.store.get_case(case_id)
    assert (case.status, case.version, case.latest_revision, case.reviewer) == ("unreviewed", 1, 0, None)
    assert case.classes == ["background", "shell", "core"]
    assert [v.voxels for v in case.class_volumes] == [12 * 10 * 8 - 36, 36, 0]
    assert case.class_volumes[1].volume_ml == pytest.approx(0.036)
    assert case.qc_warnings == ["low contrast"] and case.qc_score == 0.4
    assert case.etag == f'"{case_id}.1"'
    assert [(r.revision, r.parent, r.source, r.author) for r in case.revisions] == [(0, None, "upload", "importer")]
    assert cases.mask_path(case, 0).is_file()


def test_a_taken_name_is_a_conflict_and_creates_nothing(cases, tmp_path):
    make_case(cases, tmp_path, "dup")
    with pytest.raises(ConflictError, match="'dup' exists already"):
        make_case(cases, tmp_path, "dup")
    assert cases.store.list_cases(CaseQuery()).total == 1


def test_every_verdict_is_kept_and_the_latest_is_the_status(cases, tmp_path):
    case_id = make_case(cases, tmp_path, "v")
    cases.record_review(case_id, 1, verdict="needs_correction", score=2, note="left edge", reviewer="ann")
    after = cases.record_review(case_id, 2, verdict="accepted", score=5, note="", reviewer="bob")
    assert (after.status, after.reviewer, after.score, after.version) == ("accepted", "bob", 5, 3)
    assert [(r.verdict, r.reviewer, r.version) for r in after.reviews] == [
        ("needs_correction", "ann", 2),
        ("accepted", "bob", 3),
    ]


def test_a_verdict_from_an_old_version_is_refused_and_changes_nothing(cases, tmp_path):
    case_id = make_case(cases, tmp_path, "stale")
    cases.record_review(case_id, 1, verdict="accepted", score=None, note="", reviewer="ann")
    with pytest.raises(PreconditionFailedError, match="reload the case"):
        cases.record_review(case_id, 1, verdict="rejected", score=None, note="", reviewer="bob")
    case = cases.store.get_case(case_id)
    assert (case.status, case.version, len(case.reviews)) == ("accepted", 2, 1)


def test_unknown_cases_and_revisions_are_not_found(cases, tmp_path):
    with pytest.raises(CaseNotFoundError):
        cases.store.get_case(999)
    with pytest.raises(CaseNotFoundError):
        cases.record_review(999, 1, verdict="accepted", score=None, note="", reviewer="ann")
    case_id = make_case(cases, tmp_path, "r")
    with pytest.raises(CaseNotFoundError, match="no mask revision 4"):
        cases.store.revision(case_id, 4)


def test_a_revision_records_its_parent_author_and_the_voxels_changed_per_class(cases, tmp_path):
    case_id = make_case(cases, tmp_path, "edit")
    corrected = blob_mask()
    corrected[3:5, 3:6, 2:5] = 2  # 18 voxels move from class 1 to class 2
    corrected[0, 0, 0] = 1  # one background voxel becomes class 1
    path = write(tmp_path / "fix.nii.gz", corrected)
    assert cases.add_revision(case_id, 1, path, "fix.nii.gz", "ann") == 1
    case = cases.store.get_case(case_id)
    revision = case.revisions[1]
    assert (revision.parent, revision.author, revision.source, case.version) == (0, "ann", "correction", 2)
    changes = {k: (v.added, v.removed) for k, v in revision.changed_voxels.items()}
    assert changes == {"0": (0, 1), "1": (1, 18), "2": (18, 0)}
    assert [v.voxels for v in case.class_volumes] == [960 - 37, 19, 18]
    stored = np.asarray(nib.load(cases.mask_path(case, 1)).dataobj)
    assert np.array_equal(stored, corrected)


def test_a_revision_off_the_grid_or_with_unknown_labels_is_refused(cases, tmp_path):
    case_id = make_case(cases, tmp_path, "bad")
    shifted = np.eye(4)
    shifted[0, 3] = 2.0
    with pytest.raises(InvalidVolumeError, match="not on the voxel grid"):
        cases.add_revision(case_id, 1, write(tmp_path / "a.nii.gz", blob_mask(), shifted), "a.nii.gz", "ann")
    with pytest.raises(InvalidVolumeError, match=r"0 \.\. 2"):
        cases.add_revision(case_id, 1, write(tmp_path / "b.nii.gz", blob_mask(7)), "b.nii.gz", "ann")
    assert cases.store.get_case(case_id).version == 1


def test_the_worklist_filters_sorts_and_pages(cases, tmp_path):
    ids = [make_case(cases, tmp_path, name) for name in ("c", "a", "b", "d")]
    cases.record_review(ids[1], 1, verdict="rejected", score=None, note="", reviewer="ann")
    cases.record_review(ids[2], 1, verdict="accepted", score=None, note="", reviewer="bob")
    assert [c.name for c in cases.store.list_cases(CaseQuery(sort="name")).cases] == ["a", "b", "c", "d"]
    assert [c.name for c in cases.store.list_cases(CaseQuery(sort="-updated")).cases][:2] == ["b", "a"]
    unreviewed = cases.store.list_cases(CaseQuery(status="unreviewed"))
    assert [c.name for c in unreviewed.cases] == ["c", "d"] and unreviewed.total == 2
    assert [c.name for c in cases.store.list_cases(CaseQuery(reviewer="ann")).cases] == ["a"]
    first = cases.store.list_cases(CaseQuery(limit=3))
    second = cases.store.list_cases(CaseQuery(limit=3, offset=first.next_offset or 0))
    assert (first.total, first.next_offset, second.next_offset) == (4, 3, None)
    assert [c.id for c in first.cases + second.cases] == ids


def test_the_database_refuses_a_second_verdict_for_one_version_as_a_conflict(cases, tmp_path):
    case_id = make_case(cases, tmp_path, "unique")
    cases.record_review(case_id, 1, verdict="accepted", score=None, note="", reviewer="ann")
    row = {"case_id": case_id, "verdict": "rejected", "score": None, "note": "", "reviewer": "x", "revision": 0,
           "case_version": 2, "created_at": cases.store.get_case(case_id).updated_at}  # fmt: skip
    with pytest.raises(ConflictError), cases.store._guard(), writing(cases.store.engine) as connection:
        connection.execute(insert(reviews).values(row))


def test_concurrent_verdicts_from_threads_lose_nothing(cases, tmp_path):
    case_id = make_case(cases, tmp_path, "race")
    accepted: list[int] = []
    refused: list[int] = []
    lock = threading.Lock()

    def reviewer(name: str) -> None:
        for _ in range(15):
            version = cases.store.get_case(case_id).version
            try:
                cases.store.record_review(case_id, version, verdict="accepted", score=None, note=name, reviewer=name)
            except PreconditionFailedError:
                with lock:
                    refused.append(version)
                continue
            with lock:
                accepted.append(version)

    threads = [threading.Thread(target=reviewer, args=(f"r{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    case = cases.store.get_case(case_id)
    assert len(accepted) + len(refused) == 60
    assert sorted(accepted) == list(range(1, len(accepted) + 1))  # each version was built on exactly once
    assert case.version == 1 + len(accepted) == 1 + len(case.reviews)
