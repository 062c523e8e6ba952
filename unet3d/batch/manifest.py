"""results.csv: one row per case, appended and synced to disk as each case finishes; shard files merged into it."""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..atomic import replacing
from .inputs import Case

MANIFEST_NAME = "results.csv"
Status = Literal["ok", "failed", "skipped"]
_LEADING = ("case", "input", "output", "status", "error", "runtime_ms")
_TRAILING = ("qc_warnings", "model_id", "model_revision", "weights_sha256")
_NOT_A_NAME = re.compile(r"[^0-9a-z]+")


@dataclass(frozen=True)
class Outcome:
    """What happened to one case; an engine (local or Ray) yields one per case, the manifest records it.

    Attributes:
        case: the case.
        status: "ok" (segmented now), "failed" (see `error`) or "skipped" (a complete output already existed).
        error: the one-line reason a case failed.
        runtime_ms: wall time spent on the case (read, segment, write), None when skipped.
        summary: `Prediction.summary()` of a segmented case (class volumes, `qc` when present).
        model: `ModelSource.as_dict()` of the model that made the mask (`id`, `revision`, `sha256`).
        carried: a skipped case's cells from the earlier row that recorded its output.
    """

    case: Case
    status: Status
    error: str = ""
    runtime_ms: float | None = None
    summary: dict[str, Any] | None = None
    model: dict[str, str] | None = None
    carried: dict[str, str] = field(default_factory=dict)


def manifest_columns(class_names: Sequence[str]) -> list[str]:
    """The header: case, input, output, status, error, runtime_ms, `<class>_ml` per class, qc and model columns."""
    return [*_LEADING, *(class_column(name) for name in class_names), *_TRAILING]


def class_column(name: str) -> str:
    """`"grey matter"` → `"grey_matter_ml"`: a class name as a lower-case identifier, with the unit."""
    return f"{_NOT_A_NAME.sub('_', name.lower()).strip('_') or 'class'}_ml"


def outcome_row(outcome: Outcome, columns: Sequence[str]) -> dict[str, str]:
    """The manifest row of an outcome, every value a string (empty where there is nothing to say)."""
    case = outcome.case
    row = dict.fromkeys(columns, "")
    row.update(outcome.carried)
    row.update(case=case.case, input=str(case.input), status=outcome.status, error=_one_line(outcome.error))
    row["output"] = "" if outcome.status == "failed" else str(case.output)
    row["runtime_ms"] = "" if outcome.runtime_ms is None else f"{outcome.runtime_ms:.1f}"
    if outcome.summary is not None:
        for entry in outcome.summary.get("classes", []):
            row[class_column(entry["name"])] = repr(float(entry["volume_ml"]))
        qc = outcome.summary.get("qc")
        row["qc_warnings"] = "; ".join(qc.get("warnings", [])) if isinstance(qc, dict) else ""
    if outcome.model is not None:
        model = outcome.model
        row.update(model_id=model["id"], model_revision=model["revision"], weights_sha256=model["sha256"])
    return {name: row[name] for name in columns}


def _one_line(text: str) -> str:
    return " ".join(text.split())


class Manifest:
    """An open results file: rows are appended, flushed and fsynced one at a time (complete up to the last case).

    Opening writes the header and the `first` rows to a temporary file and renames it over `path`, so a crash while
    starting leaves the previous file whole.
    """

    def __init__(self, path: Path, columns: Sequence[str], first: Iterable[dict[str, str]] = ()) -> None:
        self.path = path
        self.columns = list(columns)
        text = _csv_text(self.columns, first, header=True)
        replace_atomically(path, text)
        self._file = open(path, "a", newline="", encoding="utf-8")  # noqa: SIM115 (closed by close())

    def append(self, row: dict[str, str]) -> None:
        """Add one row and make it durable before returning (the process may be killed right after)."""
        self._file.write(_csv_text(self.columns, [row], header=False))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        """Close the file (every row is already on disk)."""
        self._file.close()

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a results file (empty if it does not exist or has no header)."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def shard_manifest_name(index: int, count: int) -> str:
    """`results-<I>-of-<N>.csv`: the rows of one shard, merged into results.csv when a shard finishes."""
    return f"results-{index}-of-{count}.csv"


def merge_shards(folder: Path, count: int, columns: Sequence[str]) -> Path:
    """Rebuild `folder/results.csv` from every `results-<I>-of-<count>.csv` there (one row per case, the latest).

    Shards finish in any order, each merging what is there: the last to finish writes the complete file. A shard
    file that grows while this one is merging is merged again, so two shards finishing together cannot leave a file
    that lacks the other's last row.
    """
    paths = [folder / shard_manifest_name(i, count) for i in range(count)]
    while True:
        before = [_size(p) for p in paths]
        rows: dict[str, dict[str, str]] = {}
        for path in paths:
            for row in read_rows(path):
                rows.pop(row["case"], None)  # re-inserted: a later row moves the case to where it finished
                rows[row["case"]] = {name: row.get(name) or "" for name in columns}
        replace_atomically(folder / MANIFEST_NAME, _csv_text(columns, rows.values(), header=True))
        if [_size(p) for p in paths] == before:
            return folder / MANIFEST_NAME


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else -1


def replace_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` through a synced temporary file and a rename (see `replacing`)."""
    with replacing(path, "w", newline="", encoding="utf-8") as file:
        file.write(text)


def _csv_text(columns: Sequence[str], rows: Iterable[dict[str, str]], *, header: bool) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
