"""The Worklist tab's data: its filters and order as a store query, a page of cases as a table, and the case bar's
and revision list's text. Plain functions of the store's records (`api.cases.schemas`), tested without a browser."""

from __future__ import annotations

import html
from datetime import datetime
from typing import Any, cast

import pandas as pd

from ..cases.schemas import CaseDetail, CasePage, CaseSummary, SortKey, Status
from ..cases.store import CaseQuery
from .casefiles import mask_url
from .figures import pretty
from .state import WORKLIST_PAGE, OpenCase

ALL = "all"
STATUS_CHOICES = [("All", ALL), ("Unreviewed", "unreviewed"), ("Accepted", "accepted"),
                  ("Needs correction", "needs_correction"), ("Rejected", "rejected")]  # fmt: skip
SORT_CHOICES = [("Oldest first", "id"), ("Newest first", "-id"), ("Last change", "-updated"), ("Name", "name"),
                ("Status", "status"), ("QC score, lowest first", "qc")]  # fmt: skip
VERDICT_LABELS = {"accepted": "Accepted", "needs_correction": "Needs correction", "rejected": "Rejected"}
STATUS_LABELS = {"unreviewed": "unreviewed", **{k: v.lower() for k, v in VERDICT_LABELS.items()}}
COLUMNS = ["id", "case", "status", "QC warnings", "class volumes (mL)", "reviewer", "score", "revision", "last change"]
SCORE_CHOICES = [("none", 0), ("1", 1), ("2", 2), ("3", 3), ("4", 4), ("5", 5)]


def worklist_query(status: str | None, reviewer: str | None, sort: str | None, offset: int = 0) -> CaseQuery:
    """The store query for the worklist's controls (an unknown choice falls back to the default)."""
    chosen = status if status in {value for _, value in STATUS_CHOICES} and status != ALL else None
    order = sort if sort in {value for _, value in SORT_CHOICES} else "id"
    who = (reviewer or "").strip()[:100] or None
    return CaseQuery(status=cast(Status | None, chosen), reviewer=who, sort=cast(SortKey, order),
                     limit=WORKLIST_PAGE, offset=max(0, int(offset)))  # fmt: skip


def worklist_table(page: CasePage) -> pd.DataFrame:
    """One row per case of the page, in the page's order."""
    return pd.DataFrame([_row(case) for case in page.cases], columns=COLUMNS)


def _row(case: CaseSummary) -> list[Any]:
    volumes = " · ".join(f"{pretty(v.name)} {v.volume_ml:.1f}" for v in case.class_volumes if v.index != 0)
    return [
        case.id, case.name, STATUS_LABELS[case.status], "; ".join(case.qc_warnings) or "none", volumes,
        case.reviewer or "", case.score or "", case.latest_revision, _when(case.updated_at),
    ]  # fmt: skip


def pager_text(page: CasePage) -> str:
    """Which cases the page shows, e.g. "cases 26-50 of 120"."""
    if not page.total:
        return "No case matches: change the filters, or segment a volume to add one."
    first, last = page.offset + 1, page.offset + len(page.cases)
    return f"Cases {first}-{last} of {page.total}."


def case_bar(case: CaseDetail | None, opened: OpenCase | None) -> str:
    """The line above the tabs: the open case, its status and latest verdict (or what to do without a case)."""
    if case is None:
        return "No case open: pick one in the **Worklist** tab (or **Next unreviewed**), or segment a volume."
    parts = [f"**{html.escape(case.name)}** (case {case.id})", f"status **{STATUS_LABELS[case.status]}**"]
    if case.reviews:
        latest = case.reviews[-1]
        score = f", score {latest.score}" if latest.score else ""
        parts.append(f"by {html.escape(latest.reviewer)} {_when(latest.created_at)}{score}")
    parts.append(f"mask revision {case.latest_revision}")
    if opened is not None and opened.version != case.version:
        parts.append("**changed since you opened it: reload**")
    if case.qc_warnings:
        parts.append("QC: " + html.escape("; ".join(case.qc_warnings)))
    return " · ".join(parts)


def revisions_html(case: CaseDetail | None) -> str:
    """Every mask revision of the case (who made it, when, from which, what it changed per class), each with its
    download: NIfTI on the volume's exact header, and DICOM SEG where the case has a DICOM source (`dicom_seg_url`)."""
    if case is None:
        return '<div class="revisions empty">The mask revisions of the open case are listed here.</div>'
    rows = []
    for revision in reversed(case.revisions):
        changes = ", ".join(
            f"{pretty(case.classes[int(index)])} +{change.added:,} −{change.removed:,}"
            for index, change in revision.changed_voxels.items()
            if int(index) < len(case.classes)
        )
        links = [f'<a href="{mask_url(case.id, revision.revision)}" download>NIfTI</a>']
        seg = dicom_seg_url(case, revision.revision)
        if seg is not None:
            links.append(f'<a href="{seg}" download>DICOM SEG</a>')
        parent = "" if revision.parent is None else f"r{revision.parent}"
        cells = [f"r{revision.revision}", revision.source, revision.author, parent, _when(revision.created_at),
                 changes or "—", " · ".join(links)]  # fmt: skip
        escaped = [html.escape(str(c)) for c in cells[:-1]] + [cells[-1]]
        rows.append(f'<tr data-revision="{revision.revision}">' + "".join(f"<td>{c}</td>" for c in escaped) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("revision", "source", "author", "made from", "time", "voxels changed",
                                             "download"))  # fmt: skip
    return (f'<table class="revisions"><caption>Mask revisions of {html.escape(case.name)} (newest first)</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")  # fmt: skip


def dicom_seg_url(case: CaseDetail, revision: int) -> str | None:
    """Where a revision downloads as DICOM SEG, for a case read from DICOM; None until the store keeps a case's DICOM
    source (the DICOM integration): a SEG needs the source series' headers, which a NIfTI case does not have.

    The hook for that work: return the URL of a route that writes `Prediction.save_dicom_seg` for the revision.
    """
    return None


def verdict_history(case: CaseDetail | None) -> pd.DataFrame:
    """Every verdict of the case, newest first."""
    columns = ["verdict", "score", "note", "reviewer", "time", "revision"]
    rows = [
        [VERDICT_LABELS[r.verdict], r.score or "", r.note, r.reviewer, _when(r.created_at), r.revision]
        for r in reversed(case.reviews if case else [])
    ]
    return pd.DataFrame(rows, columns=columns)


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")
