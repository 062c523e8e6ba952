"""reviews.csv: one row per case with its latest verdict, or every verdict (history), safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any

from .records import utc
from .store import CaseStore

LATEST_COLUMNS = ["case_id", "case", "status", "score", "reviewer", "note", "reviewed_at", "latest_revision",
                  "updated_at", "qc_score", "qc_warnings"]  # fmt: skip
HISTORY_COLUMNS = ["case_id", "case", "verdict", "score", "reviewer", "note", "reviewed_at", "revision", "version"]
# A cell starting with one of these runs as a formula in Excel or LibreOffice (OWASP "CSV injection").
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def reviews_csv(store: CaseStore, *, history: bool) -> str:
    """The CSV text (header first); latest rows get a `<class>_ml` column per class name any case has."""
    rows = store.review_rows(history=history)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if history:
        writer.writerow(HISTORY_COLUMNS)
        writer.writerows(_history_row(row) for row in rows)
        return buffer.getvalue()
    classes = _class_names(row.class_volumes for row in rows)
    writer.writerow([*LATEST_COLUMNS, *(f"{name}_ml" for name in classes)])
    writer.writerows(_latest_row(row, classes) for row in rows)
    return buffer.getvalue()


def _class_names(volumes: Iterable[Sequence[dict[str, Any]]]) -> list[str]:
    names: dict[str, None] = {}
    for entries in volumes:
        names.update((entry["name"], None) for entry in entries)
    return list(names)


def _latest_row(row: Any, classes: list[str]) -> list[Any]:
    volumes = {entry["name"]: entry["volume_ml"] for entry in row.class_volumes}
    reviewed = utc(row.reviewed_at).isoformat() if row.reviewed_at is not None else ""
    cells = [row.id, row.name, row.status, row.score, row.reviewer, row.note, reviewed, row.latest_revision,
             utc(row.updated_at).isoformat(), row.qc_score, "; ".join(row.qc_warnings or [])]  # fmt: skip
    return [_cell(value) for value in cells] + [volumes.get(name, "") for name in classes]


def _history_row(row: Any) -> list[Any]:
    cells = [row.case_id, row.name, row.verdict, row.score, row.reviewer, row.note, utc(row.created_at).isoformat(),
             row.revision, row.case_version]  # fmt: skip
    return [_cell(value) for value in cells]


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value
