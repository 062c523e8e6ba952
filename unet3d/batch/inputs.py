"""The cases of a batch run: inputs from files, folders, globs and CSV/text lists; case ids; output names; shards.

A case is one volume: a NIfTI file, or one DICOM series (its folder, a .zip of it, or a .dcm file holding it all).
"""

from __future__ import annotations

import csv
import glob
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..archive import MAX_FILES, is_zip
from ..errors import ParameterError
from ..formats import looks_like_dicom
from ..io import NIFTI_SUFFIXES, stem_of

# A list of inputs is named by its suffix: a CSV with an `input` column (optional `case`), or one path per line.
CSV_LIST_SUFFIX = ".csv"
TEXT_LIST_SUFFIX = ".txt"
_GLOB_CHARACTERS = re.compile(r"[*?\[]")
_BAD_CASE_CHARACTERS = re.compile(r"[/\\\x00-\x1f]")


@dataclass(frozen=True)
class Source:
    """One input as listed: its path and, from a CSV's `case` column, the case id chosen for it."""

    path: Path
    case: str | None = None
    origin: str = ""  # where it was listed ("cohort.csv line 4"), for messages


@dataclass(frozen=True)
class Case:
    """One volume of a batch run and where its results go.

    Attributes:
        case: the case id (the input's stem, or a CSV's `case` column); unique within a run.
        input: the volume to segment.
        output: `<folder>/<case>_mask.nii.gz`, or the one file named by `-o`.
        probabilities: `<folder>/<case>_probabilities.nii.gz` when requested, else None.
        dicom_seg: where the DICOM SEG goes (`<seg folder>/<case>_seg.dcm`), for a DICOM input when requested.
        series: the SeriesInstanceUID to read from a DICOM input holding several series.
    """

    case: str
    input: Path
    output: Path
    probabilities: Path | None = None
    dicom_seg: Path | None = None
    series: str | None = None


def find_sources(items: Sequence[str]) -> list[Source]:
    """Expand command-line inputs: files, folders, globs, and .csv/.txt lists.

    A folder that holds DICOM files itself is one series (one case); any other folder gives its .nii/.nii.gz files,
    its .zip files and its subfolders that hold DICOM files (one series each).

    Raises:
        ParameterError: an input does not exist, a folder or glob holds no volumes, or a list is malformed.
    """
    sources: list[Source] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = folder_cases(path)
            if not found:
                raise ParameterError(
                    f"folder '{item}' holds no .nii or .nii.gz files, DICOM files, or DICOM series (subfolders or "
                    ".zip files)"
                )
            sources.extend(Source(p) for p in found)
        elif path.is_file() and path.suffix.lower() == CSV_LIST_SUFFIX:
            sources.extend(read_csv_list(path))
        elif path.is_file() and path.suffix.lower() == TEXT_LIST_SUFFIX:
            sources.extend(read_text_list(path))
        elif path.is_file():
            sources.append(Source(path))
        elif _GLOB_CHARACTERS.search(item):
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True) if _is_case(Path(p)))
            if not matches:
                raise ParameterError(f"'{item}' matches no .nii or .nii.gz files or DICOM series")
            sources.extend(Source(p) for p in matches)
        else:
            raise ParameterError(f"input '{item}' does not exist")
    return sources


def read_csv_list(path: Path) -> list[Source]:
    """The inputs of a CSV list: an `input` column (paths relative to the CSV's folder) and an optional `case`."""
    with open(path, newline="", encoding="utf-8-sig") as file:  # utf-8-sig: spreadsheets often write a BOM
        reader = csv.DictReader(file)
        columns = [name.strip() for name in reader.fieldnames or []]
        if "input" not in columns:
            raise ParameterError(
                f"{path.name} has no 'input' column (its columns: {', '.join(columns) or 'none'}): a CSV list needs "
                "a header with 'input' (the volume paths) and optionally 'case' (the case ids)"
            )
        sources = []
        for number, row in enumerate(reader, start=2):
            row = {(key or "").strip(): (value or "").strip() for key, value in row.items()}
            where = f"{path.name} line {number}"
            if not row["input"]:
                raise ParameterError(f"{where} has an empty 'input': give each row a volume path")
            case = row.get("case") or None
            if case is not None:
                check_case_id(case, where)
            sources.append(Source(_relative_to(path, row["input"]), case, where))
    if not sources:
        raise ParameterError(f"{path.name} lists no inputs: add rows under its 'input' header")
    return sources


def read_text_list(path: Path) -> list[Source]:
    """The inputs of a text list: one path per line (relative to the list's folder); blank and `#` lines skipped."""
    sources = []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        entry = line.strip()
        if entry and not entry.startswith("#"):
            sources.append(Source(_relative_to(path, entry), None, f"{path.name} line {number}"))
    if not sources:
        raise ParameterError(f"{path.name} lists no inputs: write one volume path per line")
    return sources


def check_case_id(case: str, where: str) -> None:
    """Refuse a case id that cannot name an output file (it becomes `<case>_mask.nii.gz`)."""
    if case in (".", "..") or _BAD_CASE_CHARACTERS.search(case):
        raise ParameterError(
            f"{where}: case id {case!r} cannot name a file (it holds a slash or a control character, or is '.' or "
            "'..'): use letters, digits, '-', '_' or '.'"
        )


def folder_cases(folder: Path) -> list[Path]:
    """The cases a folder holds: itself when it holds DICOM files (one series, read with any subfolders), else its
    .nii/.nii.gz files, .zip files and subfolders holding DICOM files, sorted."""
    children = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    if any(_is_dicom_file(p) for p in children):
        return [folder]
    return [p for p in children if _is_case(p)]


def plan_cases(
    sources: Sequence[Source],
    folder: Path,
    *,
    probabilities: bool = False,
    seg_folder: Path | None = None,
    series: str | None = None,
) -> list[Case]:
    """Give each source its case id and output paths in `folder`; refuses two cases with one id.

    Args:
        sources: the inputs.
        folder: where the masks (and probabilities) go.
        probabilities: also write `<case>_probabilities.nii.gz`.
        seg_folder: write a DICOM SEG `<case>_seg.dcm` there for each DICOM input (NIfTI inputs have no images for
            it to reference).
        series: the SeriesInstanceUID to read (one input only: a UID names one series).

    Raises:
        ParameterError: two inputs would write the same output (the same stem or `case`), or `series` is given for
            several inputs.
    """
    if series is not None and len(sources) != 1:
        raise ParameterError(
            f"--series picks one series of one DICOM input, but {len(sources)} inputs were given: segment that input "
            "on its own"
        )
    cases = [_case(source, folder, probabilities, seg_folder, series) for source in sources]
    seen: dict[str, Source] = {}
    for case, source in zip(cases, sources, strict=True):
        if case.case in seen:
            first = seen[case.case]
            raise ParameterError(
                f"several inputs share the name '{case.case}' ({first.path} and {source.path}): their masks would "
                "overwrite each other; rename one, or list the inputs in a CSV with a distinct 'case' for each"
            )
        seen[case.case] = source
    return cases


def _case(source: Source, folder: Path, probabilities: bool, seg_folder: Path | None, series: str | None) -> Case:
    case = source.case or stem_of(source.path.name)
    extra = folder / f"{case}_probabilities.nii.gz" if probabilities else None
    seg = seg_folder / f"{case}_seg.dcm" if seg_folder is not None and looks_like_dicom(source.path) else None
    return Case(case, source.path, folder / f"{case}_mask.nii.gz", extra, seg, series)


def parse_shard(text: str) -> tuple[int, int]:
    """`"I/N"` → `(I, N)`: shard I (counted from 0) of N, as a Slurm array index or a Kubernetes completion index.

    Raises:
        ParameterError: not two whole numbers with 0 ≤ I < N.
    """
    index, slash, count = text.partition("/")
    if not (slash and index.strip().isdigit() and count.strip().isdigit()):
        raise ParameterError(f"--shard must be I/N with whole numbers, e.g. 0/4, got {text!r}")
    i, n = int(index), int(count)
    if n < 1 or i >= n:
        raise ParameterError(
            f"--shard {text}: the index counts from 0 and must be below the shard count, e.g. 0/{max(n, 1)} to "
            f"{max(n, 1) - 1}/{max(n, 1)} (a Slurm array for N shards is --array=0-{max(n, 1) - 1})"
        )
    return i, n


def select_shard(cases: Sequence[Case], index: int, count: int) -> list[Case]:
    """The cases of shard `index` of `count`: every `count`-th case in sorted case-id order, from position `index`.

    Sorting first makes the split independent of the order the inputs were given in; the shards partition the
    cases exactly (each case is in one shard) and their sizes differ by at most one. The cases keep their order.
    """
    chosen = {
        case.case for position, case in enumerate(sorted(cases, key=lambda c: c.case)) if position % count == index
    }
    return [case for case in cases if case.case in chosen]


def _is_case(path: Path) -> bool:
    """A NIfTI file, a zip (by content), or a folder holding DICOM files."""
    if path.is_file():
        return path.name.lower().endswith(NIFTI_SUFFIXES) or is_zip(path)
    return path.is_dir() and _holds_dicom(path)


def _is_dicom_file(path: Path) -> bool:
    return path.is_file() and looks_like_dicom(path) and not is_zip(path)


def _holds_dicom(folder: Path) -> bool:
    """Whether a DICOM file lies anywhere below `folder` (the walk stops at the first, or after MAX_FILES files)."""
    seen = 0
    for directory, subdirectories, files in os.walk(folder):
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
        for name in sorted(files):
            if _is_dicom_file(Path(directory) / name):
                return True
            seen += 1
            if seen >= MAX_FILES:
                return False
    return False


def _relative_to(listing: Path, entry: str) -> Path:
    path = Path(entry).expanduser()
    return path if path.is_absolute() else listing.parent / path
