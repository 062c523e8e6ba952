"""Cases from volumes and masks: checks, content-addressed files and the store, for the HTTP API, the CLI and the UI.

Order of every write: the file first (durable under its final name), then the database transaction that refers to
it, then the answer. A crash before the commit leaves an unreferenced file; nothing acknowledged is ever lost.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unet3d import Prediction
from unet3d.errors import ParameterError
from unet3d.io import Volume, load_volume, stem_of

from ..errors import StorageUnavailableError
from ..service import Limits
from ..settings import Settings
from .database import database_url, migrate, open_engine
from .files import FileStore
from .masks import changed_voxels, check_mask, class_names, class_voxels, encode_mask
from .records import class_volumes
from .schemas import CaseDetail, Verdict
from .store import CaseStore, NewCase, NewMask, check_version
from .users import UserDirectory, UsersFileError

logger = logging.getLogger(__name__)

MAX_CASE_NAME = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Provenance:
    """Where a new case's revision 0 came from."""

    author: str
    source: str = "upload"
    qc_score: float | None = None
    qc_warnings: tuple[str, ...] = ()
    model: dict[str, str] | None = None


class CaseService:
    """The review cases: a `CaseStore` for the records, a `FileStore` for volumes and masks."""

    def __init__(self, store: CaseStore, files: FileStore, limits: Limits) -> None:
        self.store = store
        self.files = files
        self.limits = limits

    @classmethod
    def open(cls, settings: Settings) -> CaseService:
        """Open (and migrate) the database and the file store the settings name.

        Raises:
            StorageUnavailableError: the database cannot be reached or migrated, or the data folder is not writable.
        """
        files = FileStore(Path(settings.data_dir).expanduser())
        files.open()
        configured = settings.database_url.get_secret_value() if settings.database_url else None
        engine = open_engine(database_url(configured, files.root))
        migrate(engine)
        return cls(CaseStore(engine), files, Limits(settings.max_voxels, settings.max_decompressed_bytes))

    def close(self) -> None:
        """Release the database connections."""
        self.store.engine.dispose()

    def load(self, path: Path, name: str) -> Volume:
        """Read a volume or mask within the deployment's limits."""
        return load_volume(
            path,
            max_voxels=self.limits.max_voxels,
            max_decompressed_bytes=self.limits.max_decompressed_bytes,
            name=name,
        )

    def prepare_case(
        self, volume_path: Path, volume: Volume, labels: np.ndarray, *, name: str, classes: Sequence[str],
        provenance: Provenance,
    ) -> NewCase:  # fmt: skip
        """Store the volume and its revision-0 mask as files; returns the case to create (see `CaseStore`)."""
        volume_sha, suffix = self.files.put_file(volume_path)
        mask_sha = self.files.put_bytes(encode_mask(labels, volume))
        mask = NewMask(mask_sha, provenance.author, provenance.source, class_voxels(labels, len(classes)))
        return NewCase(
            name=check_case_name(name), volume_sha256=volume_sha, volume_suffix=suffix,
            volume_name=volume.name[-MAX_CASE_NAME:], shape=list(volume.shape),
            spacing_mm=[round(s, 6) for s in volume.spacing_mm], voxel_volume_ml=volume.voxel_volume_ml,
            classes=list(classes), mask=mask, qc_score=provenance.qc_score, qc_warnings=list(provenance.qc_warnings),
            model=provenance.model,
        )  # fmt: skip

    def create_from_mask(
        self, volume_path: Path, volume_name: str, mask_path: Path, mask_name: str, *, name: str | None,
        card_names: Sequence[str] | None, provenance: Provenance,
    ) -> CaseDetail:  # fmt: skip
        """A new case from a volume and a label mask on its grid (revision 0).

        Raises:
            InvalidVolumeError: the mask is not a label mask on the volume's grid (see `check_mask`).
            ConflictError: the name is taken.
        """
        volume = self.load(volume_path, volume_name)
        labels = check_mask(self.load(mask_path, mask_name), volume)
        classes = class_names(int(labels.max(initial=0)), card_names)
        case = self.prepare_case(
            volume_path, volume, labels, name=name or stem_of(volume_name), classes=classes, provenance=provenance
        )
        return self.store.get_case(self.store.create_cases([case])[0])

    def create_from_prediction(
        self, volume_path: Path, prediction: Prediction, *, name: str | None, summary: dict[str, Any]
    ) -> CaseDetail:
        """A new case whose revision 0 is the model's prediction for the volume at `volume_path`.

        Raises:
            ConflictError: the name is taken.
        """
        source = prediction.source
        qc = summary.get("qc") or {}
        provenance = Provenance(
            author=f"model:{source.id}@{source.revision}"[:MAX_CASE_NAME],
            source="prediction",
            qc_score=qc.get("score"),
            qc_warnings=tuple(str(w) for w in qc.get("warnings", ())),
            model={"id": str(source.id), "revision": str(source.revision), "sha256": str(source.sha256)},
        )
        classes = [c.name for c in prediction.card.classes]
        case = self.prepare_case(
            volume_path, prediction.volume, prediction.mask, name=name or prediction.volume.stem, classes=classes,
            provenance=provenance,
        )  # fmt: skip
        return self.store.get_case(self.store.create_cases([case])[0])

    def add_revision(self, case_id: int, expected_version: int, mask_path: Path, mask_name: str, author: str) -> int:
        """Save a corrected mask made from the case at `expected_version`; returns the new revision's number.

        Raises:
            CaseNotFoundError: no such case.
            PreconditionFailedError: the case changed since `expected_version` (checked first, and again at commit).
            InvalidVolumeError: the mask is not on the case's grid or has labels the case does not have.
        """
        case = self.store.get_case(case_id)
        check_version(case, expected_version)
        volume = self.load(self.volume_path(case), case.volume_name)
        labels = check_mask(self.load(mask_path, mask_name), volume, num_classes=len(case.classes))
        parent = case.latest_revision
        previous = self.load(self.mask_path(case, parent), "parent.nii.gz").data.astype(np.uint8)
        voxels = class_voxels(labels, len(case.classes))
        mask = NewMask(
            self.files.put_bytes(encode_mask(labels, volume)), author, "correction", voxels,
            changed_voxels(previous, labels),
        )  # fmt: skip
        volumes = class_volumes(case.classes, voxels, volume.voxel_volume_ml)
        return self.store.add_revision(case_id, expected_version, mask, parent=parent, volumes=volumes)

    def record_review(
        self, case_id: int, expected_version: int, *, verdict: Verdict, score: int | None, note: str, reviewer: str
    ) -> CaseDetail:
        """Record a verdict made from the case at `expected_version`; returns the case after it."""
        self.store.record_review(case_id, expected_version, verdict=verdict, score=score, note=note, reviewer=reviewer)
        return self.store.get_case(case_id)

    def volume_path(self, case: CaseDetail) -> Path:
        """The stored volume file of a case."""
        for suffix in (".nii.gz", ".nii"):
            path = self.files.path(case.volume_sha256, suffix)
            if path.is_file():
                return path
        raise StorageUnavailableError(f"the volume file of case {case.id} is missing from {self.files.root}")

    def mask_path(self, case: CaseDetail, revision: int) -> Path:
        """The stored .nii.gz of a mask revision (on the case volume's exact header)."""
        found = next((r for r in case.revisions if r.revision == revision), None)
        if found is None:
            found = self.store.revision(case.id, revision)  # raises CaseNotFoundError
        path = self.files.path(found.sha256, ".nii.gz")
        if not path.is_file():
            raise StorageUnavailableError(f"the mask file of case {case.id} revision {revision} is missing")
        return path


def open_cases(settings: Settings) -> CaseService:
    """Open the review storage at start-up: read the users file, prepare the files, migrate the database.

    Raises:
        StorageUnavailableError: any of them cannot be used (the message says which and what to set).
    """
    if settings.users_file is not None:
        try:
            UserDirectory(Path(settings.users_file)).names()
        except UsersFileError as e:
            raise StorageUnavailableError(f"{e}; fix UNET3D_USERS_FILE or unset it") from e
    return CaseService.open(settings)


def check_case_name(name: str) -> str:
    """A case name: 1 to 200 characters, no control characters, surrounding spaces removed.

    Raises:
        ParameterError: the name is empty, too long or has control characters.
    """
    cleaned = name.strip()
    if not cleaned or len(cleaned) > MAX_CASE_NAME or _CONTROL.search(cleaned):
        raise ParameterError(f"a case name must be 1 to {MAX_CASE_NAME} printable characters, got {name[:60]!r}")
    return cleaned
