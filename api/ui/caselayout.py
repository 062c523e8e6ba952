"""The review's components: the case bar above the tabs (verdicts, next/previous), the Worklist and Viewer tabs, the
Agreement tab's revision comparison and the hidden components of gradio_client's `/review`. No behaviour here.

`layout.build_layout` calls each section where it sits on the page and keeps them all in `Layout.cases`
(a `CaseLayout`); `caseevents.py` wires them. The elem_ids are what viewer.js (keyboard shortcuts), the CSS and the
browser tests use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import gradio as gr

from . import viewer
from .worklist import COLUMNS, SCORE_CHOICES, SORT_CHOICES, STATUS_CHOICES, VERDICT_LABELS, case_bar

EXPORT_LINKS = (
    '<a href="case-files/reviews.csv" download>Download reviews.csv</a> · '
    '<a href="case-files/reviews.csv?history=true" download>with every verdict</a>'
)
VERDICT_KEYS = {"accepted": "a", "needs_correction": "n", "rejected": "r"}


@dataclass(frozen=True, eq=False)
class CaseLayout:
    """The review's components, by name."""

    # Case bar
    case_info: gr.Markdown
    reviewer: gr.Textbox
    score: gr.Radio
    note: gr.Textbox
    verdicts: dict[str, gr.Button]
    previous: gr.Button
    next: gr.Button
    next_unreviewed: gr.Button
    reload: gr.Button
    # Worklist
    status_filter: gr.Dropdown
    reviewer_filter: gr.Textbox
    sort: gr.Dropdown
    refresh: gr.Button
    table: gr.Dataframe
    previous_page: gr.Button
    pager: gr.Markdown
    next_page: gr.Button
    export: gr.HTML
    # Viewer
    viewer: gr.HTML
    revisions: gr.HTML
    history: gr.Dataframe
    # Agreement
    compare_with: gr.Dropdown
    compare: gr.Button
    # gradio_client /review
    api_trigger: gr.Button
    api_case: gr.Number
    api_verdict: gr.Dropdown
    api_score: gr.Number
    api_note: gr.Textbox
    api_reviewer: gr.Textbox
    api_version: gr.Textbox
    api_result: gr.JSON


def case_bar_section() -> dict[str, Any]:
    """Above the tabs: the open case, the reviewer, the verdict (score, note, three buttons) and navigation."""
    parts: dict[str, Any] = {}
    with gr.Group(elem_id="case-bar"):
        parts["case_info"] = gr.Markdown(case_bar(None, None), elem_id="case-info")
        with gr.Row(equal_height=True):
            parts["reviewer"] = gr.Textbox(label="Reviewer", placeholder="your name (asked once per tab)",
                                           max_length=100, scale=1, min_width=160, elem_id="reviewer-name")  # fmt: skip
            parts["score"] = gr.Radio(SCORE_CHOICES, value=0, label="Score (optional)", scale=2, min_width=260,
                                      elem_id="verdict-score")  # fmt: skip
            parts["note"] = gr.Textbox(label="Note", placeholder="optional", max_length=10_000, scale=3,
                                       min_width=200, elem_id="verdict-note")  # fmt: skip
        with gr.Row(elem_id="case-actions"):
            small: dict[str, Any] = {"size": "sm", "min_width": 90}
            parts["previous"] = gr.Button("◀ Previous (k)", elem_id="case-prev", **small)
            parts["next"] = gr.Button("Next (j) ▶", elem_id="case-next", **small)
            parts["next_unreviewed"] = gr.Button("Next unreviewed", elem_id="next-unreviewed", **small)
            parts["reload"] = gr.Button("Reload case", elem_id="case-reload", **small)
            variants: dict[str, Literal["primary", "secondary", "stop"]] = {
                "accepted": "primary", "needs_correction": "secondary", "rejected": "stop"
            }  # fmt: skip
            buttons = {}
            for verdict, label in VERDICT_LABELS.items():
                text, variant = f"{label} ({VERDICT_KEYS[verdict]})", variants[verdict]
                buttons[verdict] = gr.Button(text, variant=variant, elem_id=f"verdict-{verdict}", **small)
            parts["verdicts"] = buttons
    return parts


def worklist_tab() -> dict[str, Any]:
    """The Worklist tab: filters, order, a page of cases (click a row to open it), paging and the CSV export."""
    parts: dict[str, Any] = {}
    with gr.Row(equal_height=True):
        parts["status_filter"] = gr.Dropdown(STATUS_CHOICES, value="all", label="Status", elem_id="worklist-status")
        parts["reviewer_filter"] = gr.Textbox(label="Reviewer", placeholder="anyone", elem_id="worklist-reviewer")
        parts["sort"] = gr.Dropdown(SORT_CHOICES, value="id", label="Order", elem_id="worklist-sort")
        parts["refresh"] = gr.Button("Refresh", size="sm", elem_id="worklist-refresh")
    parts["table"] = gr.Dataframe(headers=COLUMNS, interactive=False, wrap=True, elem_id="worklist",
                                  label="Cases (click a row to open it)")  # fmt: skip
    with gr.Row(equal_height=True):
        parts["previous_page"] = gr.Button("◀ Previous page", size="sm", elem_id="worklist-previous-page")
        parts["pager"] = gr.Markdown(elem_id="worklist-pager")
        parts["next_page"] = gr.Button("Next page ▶", size="sm", elem_id="worklist-next-page")
        parts["export"] = gr.HTML(EXPORT_LINKS, elem_id="worklist-export")
    return parts


def viewer_tab() -> dict[str, Any]:
    """The Viewer tab: NiiVue (three views, 3D render, corrections), the mask revisions and the verdict history."""
    markup, starts = viewer.viewer_markup(), viewer.JS_ON_LOAD
    parts: dict[str, Any] = {
        "viewer": gr.HTML(None, html_template=markup, js_on_load=starts, apply_default_css=False, elem_id="viewer"),
        "revisions": gr.HTML(elem_id="revisions"),
    }
    parts["history"] = gr.Dataframe(label="Verdicts (newest first)", interactive=False, wrap=True, elem_id="history")
    return parts


def compare_section() -> dict[str, Any]:
    """In the Agreement tab: the open case's prediction (revision 0) against one of its corrections."""
    with gr.Row(equal_height=True):
        compare_with = gr.Dropdown([], label="Compare the prediction (revision 0) with revision", scale=2,
                                   elem_id="compare-revision")  # fmt: skip
        compare = gr.Button("Compare", size="sm", scale=1, elem_id="compare-btn")
    return {"compare_with": compare_with, "compare": compare}


def review_api_section() -> dict[str, Any]:
    """The inputs and output of gradio_client's `/review`, never shown."""
    return {
        "api_trigger": gr.Button(visible=False),
        "api_case": gr.Number(label="case_id", precision=0, visible=False),
        "api_verdict": gr.Dropdown(list(VERDICT_LABELS), label="verdict", visible=False),
        "api_score": gr.Number(None, label="score", precision=0, visible=False),
        "api_note": gr.Textbox("", label="note", visible=False),
        "api_reviewer": gr.Textbox("", label="reviewer", visible=False),
        "api_version": gr.Textbox("", label="etag", visible=False),
        "api_result": gr.JSON(label="case", visible=False),
    }
