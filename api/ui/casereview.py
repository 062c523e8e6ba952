"""The UI's bridge to the review store: a fresh segmentation becomes a case, and a stored case becomes a `Review`.

A segmentation made in the page is kept as a case (revision 0: the prediction), so that closing the tab loses
nothing; opening a case builds the same `Review` a segmentation builds, from the stored volume and a mask revision,
so every tab (slices, statistics, agreement, surface, downloads) shows it as it shows a fresh result.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np

from unet3d import ClassInfo, ModelCard, Prediction
from unet3d.hub import ModelSource

from ..cases.schemas import CaseDetail
from ..cases.service import MAX_CASE_NAME, CaseService
from ..errors import ConflictError
from .review import Review, start_review

logger = logging.getLogger(__name__)

# Colours for classes a model card does not describe (an imported case's class_N): Okabe-Ito, colour-blind safe.
PALETTE = ("#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7", "#999999")
NAME_ATTEMPTS = 50


def keep_prediction(cases: CaseService, upload: Path, prediction: Prediction, workdir: Path) -> CaseDetail:
    """Store a segmentation made in the page as a new case, named after the uploaded file (`t1`, then `t1 (2)`, ...).

    A DICOM upload (a .zip or .dcm files, read by the DICOM integration) is stored as the NIfTI volume that was
    segmented, written into `workdir`: the case's volume and masks are NIfTI on one grid.

    Raises:
        ConflictError: every candidate name is taken.
        StorageUnavailableError: the database or the data folder cannot be written.
    """
    volume_file = upload if prediction.volume.source.format == "nifti" else _nifti_copy(prediction, workdir)
    stem = prediction.volume.stem[: MAX_CASE_NAME - 8] or "volume"
    summary = prediction.summary()
    for attempt in range(1, NAME_ATTEMPTS + 1):
        name = stem if attempt == 1 else f"{stem} ({attempt})"
        if cases.store.existing_names([name]):
            continue
        try:
            return cases.create_from_prediction(volume_file, prediction, name=name, summary=summary)
        except ConflictError:  # taken meanwhile by another tab: try the next one
            continue
    raise ConflictError(f"cases named {stem!r} to {stem!r} ({NAME_ATTEMPTS}) exist already: rename the file")


def case_review(cases: CaseService, case: CaseDetail, revision: int, card: ModelCard | None) -> Review:
    """The review of a stored case's mask `revision`, its files in a fresh private folder.

    Raises:
        CaseNotFoundError: no such revision.
        StorageUnavailableError: a stored file is missing.
        Unet3dError: a stored file cannot be read within the deployment's limits.
    """
    volume = cases.load(cases.volume_path(case), case.volume_name)
    mask = cases.load(cases.mask_path(case, revision), f"{case.name}_r{revision}_mask.nii.gz")
    labels = np.rint(mask.data).astype(np.uint8)
    workdir = Path(tempfile.mkdtemp(prefix="unet3d-ui-case-"))
    try:
        review = start_review(stored_prediction(case, volume, labels, card), workdir)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return replace(review, case_id=case.id, revision=revision)


def stored_prediction(case: CaseDetail, volume: object, labels: np.ndarray, card: ModelCard | None) -> Prediction:
    """A stored mask revision as a `Prediction` (nothing ran: device and mode say "stored"), so that its review,
    tables and summary are built exactly as a fresh segmentation's."""
    model = case.model or {}
    source = ModelSource(
        id=model.get("id", "stored"), revision=model.get("revision", "stored"), directory=Path(),
        weights=Path(), sha256=model.get("sha256", ""),
    )  # fmt: skip
    shape = tuple(int(n) for n in labels.shape)
    return Prediction(
        mask=labels, volume=volume, card=case_card(case.classes, card), source=source,  # type: ignore[arg-type]
        device="stored", mode="stored", network_shape=(shape[0], shape[1], shape[2]),
    )  # fmt: skip


def case_card(classes: list[str], card: ModelCard | None) -> ModelCard:
    """The served model's card when the case has its classes (names and colours), else one naming the case's."""
    if card is not None and card.class_names() == classes:
        return card
    infos = tuple(
        ClassInfo(index, name, "#000000" if index == 0 else PALETTE[(index - 1) % len(PALETTE)])
        for index, name in enumerate(classes)
    )
    return ModelCard(name="stored case", version="-", classes=infos)


def _nifti_copy(prediction: Prediction, workdir: Path) -> Path:
    """The segmented volume as a .nii.gz in `workdir` (for uploads that were not NIfTI)."""
    volume = prediction.volume
    target = workdir / f"{volume.stem or 'volume'}.nii.gz"
    nib.save(nib.Nifti1Image(volume.data, volume.affine), target)
    return target
