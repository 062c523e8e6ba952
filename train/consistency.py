"""Full-head consistency: does the model give the same answer with and without the skull, and nothing outside?

For a head scan and the same scan skull-stripped (or the head and its brain mask: the stripped scan is then the head
times the mask), two figures per case (issue 17's goals):
- `outside_fraction`: grey + white matter labelled outside the brain mask in the full-head result, as a fraction
  of all grey + white matter labelled there (goal ≤ 1%);
- `agreement_dice`: per class, Dice between the full-head result and the skull-stripped result (goal ≥ 0.95).
Where the case has reference labels, the Dice of each result against them too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from unet3d import Segmenter, load_volume
from unet3d.metrics import dice

from .data import FULL_HEAD_ROLES, DatasetError, read_dataset
from .provenance import sha256_of

OUTSIDE_LIMIT = 0.01
AGREEMENT_LIMIT = 0.95


@dataclass(frozen=True)
class HeadCase:
    """A full-head scan, the same scan skull-stripped (None: the head inside `brain`), its brain mask (None:
    stripped > 0), optional labels and, for a generated head, the brain with the CSF around it."""

    name: str
    head: Path
    stripped: Path | None
    brain: Path | None = None
    label: Path | None = None
    brain_csf: Path | None = None

    def __post_init__(self) -> None:
        if self.stripped is None and self.brain is None:
            raise ValueError(f"head case {self.name!r}: a stripped scan or a brain mask is needed")

    def stripped_file(self) -> Path:
        """The stripped scan's file.

        Raises:
            DatasetError: the case has none (a real head given with its brain mask).
        """
        if self.stripped is None:
            raise DatasetError(f"{self.name}: no skull-stripped scan on file (a head given with its brain mask)")
        return self.stripped

    @property
    def files(self) -> list[Path]:
        """The scans and masks the case reads."""
        return [p for p in (self.head, self.stripped, self.brain, self.label, self.brain_csf) if p is not None]


def real_head(head: str | Path, brain: str | Path) -> HeadCase:
    """A real full-head scan and its brain mask (e.g. ROBEX's reference head, scripts/get-robex-head.sh), named by the
    head's path.

    Raises:
        DatasetError: either file is missing.
    """
    head, brain = Path(head), Path(brain)
    for path in (head, brain):
        if not path.is_file():
            raise DatasetError(f"{path} is not a file: a real head is given as its scan and its brain mask")
    return HeadCase(str(head), head, None, brain)


def dataset_heads(root: str | Path, split: str) -> list[HeadCase]:
    """The full-head cases dataset.json lists under "fullhead" for `split` ([] when it lists none)."""
    root = Path(root)
    listed = (read_dataset(root).get("fullhead") or {}).get(split) or []
    found = []
    for entry in listed:
        paths = {key: root / entry[key] for key in FULL_HEAD_ROLES if entry.get(key)}
        for path in paths.values():
            if not path.is_file():
                raise DatasetError(f"{path} is missing (dataset.json lists it under 'fullhead' / {split!r})")
        found.append(
            HeadCase(
                entry["name"],
                paths["head"],
                paths["stripped"],
                paths.get("brain"),
                paths.get("label"),
                paths.get("brain_csf"),
            )
        )
    return found


def measure_case(segmenter: Segmenter, case: HeadCase) -> dict[str, Any]:
    """Both predictions of one case and its consistency figures (volumes in mL)."""
    started = time.perf_counter()
    head = load_volume(case.head)
    full = segmenter.predict(head).mask
    brain = (load_volume(case.brain).data > 0.5) if case.brain else None
    if brain is not None and brain.shape != full.shape:
        raise DatasetError(f"{case.brain}: shape {brain.shape} differs from {case.head.name}'s {full.shape}")
    if case.stripped is None and brain is not None:
        stripped_volume = replace(head, data=head.data * brain, name=f"stripped-{head.name}")
    else:
        stripped_volume = load_volume(case.stripped_file())
    stripped = segmenter.predict(stripped_volume).mask
    if full.shape != stripped.shape:
        raise DatasetError(f"{case.stripped}: shape {stripped.shape} differs from {case.head.name}'s {full.shape}")
    if brain is None:
        brain = stripped_volume.data > 0
    voxel_ml = stripped_volume.voxel_volume_ml
    names = segmenter.card.class_names()
    row: dict[str, Any] = {"case": case.name, **consistency(full, stripped, brain, names, voxel_ml)}
    if case.label is not None:
        reference = np.rint(load_volume(case.label).data).astype(np.uint8)
        row["dice_full_vs_label"] = {n: _round(dice(full, reference, i)) for i, n in enumerate(names) if i}
        row["dice_stripped_vs_label"] = {n: _round(dice(stripped, reference, i)) for i, n in enumerate(names) if i}
    row["seconds"] = round(time.perf_counter() - started, 2)
    return row


def consistency(
    full: np.ndarray, stripped: np.ndarray, brain: np.ndarray, names: list[str], voxel_ml: float
) -> dict[str, Any]:
    """The figures of one case from its two masks (same grid) and the brain mask (bool)."""
    tissue = full > 0
    labelled = int(tissue.sum())
    outside = int((tissue & ~brain).sum())
    return {
        "outside_fraction": round(outside / labelled, 5) if labelled else None,
        "outside_ml": round(outside * voxel_ml, 2),
        "agreement_dice": {n: _round(dice(full, stripped, i)) for i, n in enumerate(names) if i},
        "volume_ml_full": {n: round(float((full == i).sum()) * voxel_ml, 1) for i, n in enumerate(names) if i},
        "volume_ml_stripped": {n: round(float((stripped == i).sum()) * voxel_ml, 1) for i, n in enumerate(names) if i},
    }


def summarise(rows: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Worst and mean figures over the cases, and whether every case meets the goals."""
    fractions = [r["outside_fraction"] for r in rows if r["outside_fraction"] is not None]
    agreement = {n: [r["agreement_dice"][n] for r in rows if r["agreement_dice"][n] is not None] for n in names[1:]}
    passed = bool(fractions) and max(fractions) <= OUTSIDE_LIMIT
    passed = passed and all(values and min(values) >= AGREEMENT_LIMIT for values in agreement.values())
    return {
        "goals": {"outside_fraction_at_most": OUTSIDE_LIMIT, "agreement_dice_at_least": AGREEMENT_LIMIT},
        "outside_fraction": {"max": max(fractions, default=None), "mean": _mean(fractions)},
        "agreement_dice": {n: {"min": min(v, default=None), "mean": _mean(v)} for n, v in agreement.items()},
        "meets_goals": passed,
        "cases": rows,
    }


def evaluate_heads(
    model: str | Path, cases: list[HeadCase], *, device: str = "auto", describe_files: bool = False
) -> dict[str, Any]:
    """Measure every case with one loaded model; with `describe_files`, each file's sha256 too (external scans)."""
    summary = measure_heads(Segmenter.from_pretrained(model, device=device), cases)
    if describe_files:
        summary["files"] = {str(path): sha256_of(path) for case in cases for path in case.files}
    return summary


def measure_heads(segmenter: Segmenter, cases: list[HeadCase]) -> dict[str, Any]:
    """Every case measured with this (loaded) model, and the summary of their figures."""
    return summarise([measure_case(segmenter, case) for case in cases], segmenter.card.class_names())


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 5) if values else None
