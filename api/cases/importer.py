"""`unet3d review import DIR`: cases from a batch run's results.csv, or from volumes and masks paired by name.

A batch folder is recognised by its `results.csv` (columns `case, input, output, status, error, runtime_ms,
<class>_ml..., qc_warnings, model_id, model_revision, weights_sha256`); rows with status ok or skipped (an output a
previous run completed) become cases, failed rows are reported. Otherwise the folder is read as pairs
`<stem>.nii[.gz]` + `<stem>_mask.nii[.gz]`. Names that exist already are left alone, so importing twice is harmless.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from unet3d.errors import ParameterError, Unet3dError
from unet3d.io import stem_of

from ..errors import ConflictError
from .masks import check_mask, class_names
from .service import CaseService, Provenance
from .store import NewCase

RESULTS = "results.csv"
CHUNK = 100  # cases per transaction: one fsync per hundred cases, and a crash loses at most one chunk
_SUFFIXES = (".nii.gz", ".nii")


@dataclass(frozen=True)
class ImportItem:
    """One case to import: its files, its provenance and (from results.csv) the class names."""

    name: str
    volume: Path
    mask: Path
    provenance: Provenance
    classes: tuple[str, ...] = ()


@dataclass
class ImportReport:
    """What an import did: case names imported, present already, and refused (with the reason)."""

    imported: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)


def plan_import(folder: Path) -> tuple[list[ImportItem], list[tuple[str, str]]]:
    """The cases a folder holds, and the entries that cannot become cases (name, reason).

    Raises:
        ParameterError: the folder does not exist, or holds neither results.csv nor any .nii/.nii.gz file.
    """
    if not folder.is_dir():
        raise ParameterError(f"'{folder}' is not a folder: give a batch run's output folder or a folder of volumes")
    if (folder / RESULTS).is_file():
        return _from_results(folder)
    return _from_pairs(folder)


def import_cases(
    service: CaseService, items: Sequence[ImportItem], *, card_names: Sequence[str] | None, chunk: int = CHUNK
) -> ImportReport:
    """Check, store and record `items`; names present already are skipped."""
    report = ImportReport()
    present = service.store.existing_names([item.name for item in items])
    batch: list[NewCase] = []
    for item in items:
        if item.name in present:
            report.present.append(item.name)
            continue
        try:
            batch.append(_prepare(service, item, card_names))
        except Unet3dError as e:
            report.refused.append((item.name, str(e)))
            continue
        if len(batch) >= chunk:
            _commit(service, batch, report)
            batch = []
    _commit(service, batch, report)
    return report


def _prepare(service: CaseService, item: ImportItem, card_names: Sequence[str] | None) -> NewCase:
    volume = service.load(item.volume, item.volume.name)
    labels = check_mask(service.load(item.mask, item.mask.name), volume)
    classes = class_names(int(labels.max(initial=0)), item.classes or card_names)
    return service.prepare_case(
        item.volume, volume, labels, name=item.name, classes=classes, provenance=item.provenance
    )


def _commit(service: CaseService, batch: list[NewCase], report: ImportReport) -> None:
    if not batch:
        return
    try:
        service.store.create_cases(batch)
        report.imported.extend(case.name for case in batch)
        return
    except ConflictError:
        pass  # another import took a name meanwhile: go one by one
    for case in batch:
        try:
            service.store.create_cases([case])
            report.imported.append(case.name)
        except ConflictError:
            report.present.append(case.name)


def _from_results(folder: Path) -> tuple[list[ImportItem], list[tuple[str, str]]]:
    with (folder / RESULTS).open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = {"case", "input", "output", "status"} - set(columns)
        if missing:
            raise ParameterError(f"{folder / RESULTS} lacks the columns {sorted(missing)}: is it a batch run's?")
        classes = tuple(c.removesuffix("_ml") for c in columns if c.endswith("_ml"))
        items, refused = [], []
        for row in reader:
            name = (row.get("case") or stem_of(row.get("input") or "")).strip()
            if row.get("status") not in ("ok", "skipped"):
                refused.append((name, f"the batch run failed on it: {row.get('error') or row.get('status')}"))
                continue
            volume, mask = _locate(folder, row.get("input", "")), _locate(folder, row.get("output", ""))
            if volume is None or mask is None:
                refused.append((name, f"file not found: {row.get('input') if volume is None else row.get('output')}"))
                continue
            items.append(ImportItem(name, volume, mask, _provenance(row), classes))
    return items, refused


def _provenance(row: dict[str, str]) -> Provenance:
    model_id = (row.get("model_id") or "").strip()
    model = None
    if model_id:
        model = {"id": model_id, "revision": row.get("model_revision") or "", "sha256": row.get("weights_sha256") or ""}
    author = f"model:{model_id}@{model['revision']}" if model else "import"
    return Provenance(author=author[:200], source="import", qc_warnings=parse_warnings(row.get("qc_warnings")),
                      model=model)  # fmt: skip


def parse_warnings(cell: str | None) -> tuple[str, ...]:
    """QC warnings from a CSV cell: a JSON list, or texts separated by ';' or '|'."""
    text = (cell or "").strip()
    if not text:
        return ()
    if text.startswith("["):
        try:
            return tuple(str(w) for w in json.loads(text))
        except (ValueError, TypeError):
            pass
    return tuple(part.strip() for part in re.split(r"[;|]", text) if part.strip())


def _locate(folder: Path, recorded: str) -> Path | None:
    """A path from results.csv: as recorded (absolute, or relative to here), else beside results.csv."""
    if not recorded:
        return None
    path = Path(recorded)
    for candidate in (path, folder / path, folder / path.name):
        if candidate.is_file():
            return candidate
    return None


def _from_pairs(folder: Path) -> tuple[list[ImportItem], list[tuple[str, str]]]:
    files = {stem_of(p.name): p for p in sorted(folder.iterdir()) if p.is_file() and p.name.lower().endswith(_SUFFIXES)}
    if not files:
        raise ParameterError(f"'{folder}' holds neither {RESULTS} nor any .nii/.nii.gz file")
    items, refused = [], []
    for stem, path in files.items():
        if stem.endswith("_mask"):
            if stem.removesuffix("_mask") not in files:
                refused.append((stem, f"{path.name} has no volume named {stem.removesuffix('_mask')}.nii.gz"))
            continue
        mask = files.get(f"{stem}_mask")
        if mask is None:
            refused.append((stem, f"no mask {stem}_mask.nii.gz: segment it first (unet3d predict DIR -o OUT)"))
            continue
        items.append(ImportItem(stem, path, mask, Provenance(author="import", source="import")))
    return items, refused
