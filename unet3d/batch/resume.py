"""Resuming a batch run: which outputs are complete, what the earlier rows said, and leftovers of a killed run."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from ..atomic import TEMPORARY_MARK
from ..card import ModelCard
from ..errors import ParameterError, Unet3dError
from ..formats import looks_like_dicom
from ..geometry import same_affine
from ..hub import ModelSource
from ..io import MASK_DESCRIPTION, PROBABILITIES_DESCRIPTION, inspect_volume, load_volume
from ..nifti import READ_ERRORS, verify_stored_data
from ..prediction import Prediction
from .inputs import Case
from .manifest import Outcome, class_column

_UNREADABLE: tuple[type[Exception], ...] = (*READ_ERRORS, Unet3dError)

# The cells a skipped case takes over from the row that recorded its output.
_CARRIED = ("qc_warnings", "model_id", "model_revision", "weights_sha256")


def is_complete(case: Case) -> bool:
    """Whether a case's outputs exist whole: readable NIfTI written by unet3d on its input's grid (and shape), and
    the DICOM SEG when one is asked for (a whole file referencing the input's series).

    The data is read through (a .gz file's checksum included); outputs are renamed into place only once written, so
    a file under the final name is either complete or was damaged later, and is then redone. A DICOM input's grid
    comes from its headers (`inspect_dicom`: the files are parsed, no pixel is decoded).
    """
    try:
        shape, affine, series_uid = _input_grid(case)
        mask = inspect_volume(case.output)
        probabilities = _open_whole(case.probabilities) if case.probabilities else None
    except _UNREADABLE:
        return False
    if not (_written_as(mask, MASK_DESCRIPTION) and mask.shape == shape and same_affine(mask.affine, affine)):
        return False
    if case.dicom_seg is not None and not _whole_seg(case.dicom_seg, series_uid):
        return False
    if probabilities is None:
        return True
    return (
        _written_as(probabilities, PROBABILITIES_DESCRIPTION)
        and probabilities.shape[:3] == shape[:3]
        and same_affine(probabilities.affine, affine)
    )


def _input_grid(case: Case) -> tuple[tuple[int, ...], np.ndarray, str | None]:
    """The input's stored shape and affine (and, for DICOM, its series UID), from headers only."""
    if looks_like_dicom(case.input):
        from ..dicom import inspect_dicom

        grid = inspect_dicom(case.input, series=case.series)
        return grid.shape, grid.affine, grid.series_uid
    source = inspect_volume(case.input, verify_data=False)
    return source.shape, source.affine, None


def _whole_seg(path: Path, series_uid: str | None) -> bool:
    from ..dicom.seg import seg_references

    return series_uid is not None and seg_references(path) == series_uid


def _open_whole(path: Path) -> nib.Nifti1Image | nib.Nifti2Image:
    """A 4D probabilities file (which `inspect_volume`, for 3D inputs, refuses), with its data read through."""
    verify_stored_data(path)
    return nib.load(path)  # type: ignore[return-value]


def _written_as(image: nib.Nifti1Image | nib.Nifti2Image, description: bytes) -> bool:
    return bytes(image.header["descrip"].item()) == description


def remove_temporaries(folder: Path, cases: Sequence[Case]) -> int:
    """Delete `<output>.tmp-<pid>` files that a killed run left for these cases' outputs; returns how many.

    Only the given cases' files are touched: another shard writing into the same folder keeps its own.
    """
    outputs = [(case.output, case.probabilities, case.dicom_seg) for case in cases]
    ours = {path.name for paths in outputs for path in paths if path is not None}
    pattern = re.compile(rf"(.+){re.escape(TEMPORARY_MARK)}\d+")
    removed = 0
    with os.scandir(folder) as entries:
        for entry in entries:
            match = pattern.fullmatch(entry.name)
            if match and match.group(1) in ours and entry.is_file():
                Path(entry.path).unlink(missing_ok=True)
                removed += 1
    return removed


def skipped_outcome(case: Case, previous: dict[str, str] | None, card: ModelCard) -> Outcome:
    """The outcome of a case whose outputs are complete: the earlier row's volumes, QC and model when there is one
    for this output, else volumes measured from the mask (and no model, which the mask does not record)."""
    if previous is not None and previous.get("output") == str(case.output) and previous.get("status") != "failed":
        columns = [class_column(c.name) for c in card.classes] + list(_CARRIED)
        return Outcome(case, "skipped", carried={name: previous.get(name) or "" for name in columns})
    return Outcome(case, "skipped", summary={"classes": _measured_classes(case, card)})


def _measured_classes(case: Case, card: ModelCard) -> list[dict[str, object]]:
    """Each class's voxels and volume in an existing mask, counted as a fresh prediction's summary counts them."""
    mask = load_volume(case.output)
    labels = mask.data.astype(np.uint8)
    unknown = ModelSource(id="", revision="", directory=Path(), weights=Path(), sha256="")
    measured = Prediction(labels, mask, card, unknown, device="", mode="", network_shape=mask.shape)
    return [{"name": c["name"], "volume_ml": c["volume_ml"]} for c in measured.summary()["classes"]]


def check_same_model(skipping: Sequence[Case], previous: dict[str, dict[str, str]], model: dict[str, str]) -> None:
    """Refuse to resume over masks that earlier rows say other weights made: the study would mix two models.

    Raises:
        ParameterError: naming the other model and saying how to go on.
    """
    others = [
        previous[case.case]
        for case in skipping
        if previous.get(case.case, {}).get("weights_sha256") not in (None, "", model["sha256"])
    ]
    if others:
        other = others[0]
        raise ParameterError(
            f"{len(others)} finished case(s) in this folder were segmented by other weights (model "
            f"{other.get('model_id')!r}, sha256 {other['weights_sha256'][:12]}…) than this run's ({model['id']!r}, "
            f"sha256 {model['sha256'][:12]}…): pass --overwrite to redo them with this model, or use another -o folder"
        )
