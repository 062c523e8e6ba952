"""The review's handlers: stored cases in the page (`CaseEvents`): the worklist, opening a case, next/previous,
verdicts, a correction saved by the viewer, the revision comparison, and gradio_client's `/review`.

Handlers follow `events.py`'s rules (inputs as a set, `{component: new value}` out). Opening a case builds the same
`Review` a segmentation builds (`casereview.case_review`), so the chain that follows a segmentation (`ReviewEvents`'
present, then the surface) shows it in every tab; the viewer gets the case as its value (`viewer.payload`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

import gradio as gr

from unet3d import ModelCard, Prediction
from unet3d.errors import Unet3dError

from ..cases.schemas import MAX_NOTE, CaseDetail, CasePage, Verdict
from ..cases.service import CaseService
from ..cases.store import CaseQuery
from ..errors import ServiceError
from .casereview import case_card, case_review, keep_prediction
from .errors import case_errors, user_error
from .identity import reviewer_name
from .review import Review, attach_reference
from .reviewapi import REVIEW_API, record_from_api
from .state import OpenCase, Session
from .viewer import payload
from .views import auto_window
from .worklist import case_bar, pager_text, revisions_html, verdict_history, worklist_query, worklist_table

if TYPE_CHECKING:
    from .events import ReviewEvents

logger = logging.getLogger(__name__)

Values = dict[Any, Any]
Changes = dict[Any, Any]
NOT_OPEN = "The review database is not open yet: try again in a few seconds."
LAST_CASE = "There is no case after this one in the worklist's order."
FIRST_CASE = "This is the first case in the worklist's order."
PRIVATE: dict[str, Any] = {"api_visibility": "private"}


class CaseEvents:
    """Handlers of the review of stored cases, beside the segmentation handlers of `ReviewEvents`."""

    def __init__(self, events: ReviewEvents, get_cases: Callable[[], CaseService | None]) -> None:
        self.events = events
        self.ui = events.ui
        self.c = events.ui.cases
        self._get_cases = get_cases

    def cases(self) -> CaseService:
        found = self._get_cases()
        if found is None:
            raise user_error(NOT_OPEN)
        return found

    def card(self) -> ModelCard | None:
        """The served model's card (class names and colours), None while it loads."""
        service = self.events.loaded_service()
        return None if service is None else service.segmenter.card

    # A segmentation becomes a case

    def keep(self, session: Session, review: Review, prediction: Prediction) -> Review:
        """Store a fresh segmentation as a case and make it the tab's open case; without storage (or if it fails),
        the review is shown as before and the user is told it was not kept."""
        session.case = None
        store = self._get_cases()
        if store is None or review.source is None:
            return review
        try:
            case = keep_prediction(store, review.source, prediction, review.workdir)
        except (ServiceError, Unet3dError) as e:
            logger.warning("a segmentation could not be stored as a case: %s", e)
            gr.Warning(f"This segmentation is shown but was not stored as a case ({e}).")
            return review
        session.case = OpenCase(case.id, case.version, case.name)
        return replace(review, case_id=case.id, revision=0)

    # Page load, worklist

    def startup(self, values: Values, request: gr.Request) -> Changes:
        """The reviewer box (the signed-in user, or a name to type) and the worklist, when a page loads."""
        c, session = self.c, values[self.ui.session]
        user = getattr(request, "username", None)
        if user:
            session.reviewer = user
            changes: Changes = {c.reviewer: gr.Textbox(value=user, label="Reviewer (signed in)", interactive=False)}
        else:
            changes = {c.reviewer: gr.Textbox(interactive=True)}  # no value: it would wipe a name typed meanwhile
        if self._get_cases() is not None:
            changes |= self._worklist(session, session.worklist)
        return {**changes, self.ui.session: session}

    def remember_reviewer(self, values: Values) -> Changes:
        """Keep the typed reviewer name for this tab (and for the viewer's saves)."""
        session, name = values[self.ui.session], (values[self.c.reviewer] or "").strip()[:100]
        session.reviewer = name
        changes: Changes = {self.ui.session: session}
        if session.case is not None and session.review is not None and session.review.case_id == session.case.id:
            with case_errors():
                changes[self.c.viewer] = self._payload(session, self.cases().store.get_case(session.case.id))
        return changes

    def filter_worklist(self, values: Values) -> Changes:
        """The first page for the filters and order chosen."""
        c, session = self.c, values[self.ui.session]
        query = worklist_query(values[c.status_filter], values[c.reviewer_filter], values[c.sort])
        return {**self._worklist(session, query), self.ui.session: session}

    def turn_page(self, step: int) -> Callable[[Values], Changes]:
        """The handler of the previous (-1) or next (+1) page button."""

        def turn(values: Values) -> Changes:
            session = values[self.ui.session]
            query = session.worklist
            offset = max(0, query.offset + step * query.limit)
            return {**self._worklist(session, replace(query, offset=offset)), self.ui.session: session}

        return turn

    def _worklist(self, session: Session, query: CaseQuery) -> Changes:
        with case_errors():
            page = self.cases().store.list_cases(query)
        if not page.cases and page.total and query.offset:  # past the end (cases left the filter): last page
            last = (page.total - 1) // query.limit * query.limit
            return self._worklist(session, replace(query, offset=last))
        session.worklist = query
        return {self.c.table: worklist_table(page), self.c.pager: pager_text(page)}

    # Opening a case

    def open_row(self, values: Values, selected: gr.SelectData) -> Changes:
        """Open the case of the worklist row clicked."""
        session = values[self.ui.session]
        row = selected.row_value if isinstance(selected.row_value, list) else None
        if not row or not str(row[0]).isdigit():
            raise user_error("Click the row of a case to open it.")
        position = session.worklist.offset + int(selected.index[0]) if isinstance(selected.index, list) else None
        return self._open(session, int(row[0]), position)

    def step(self, direction: int) -> Callable[[Values], Changes]:
        """The handler of Next (+1) and Previous (-1): the neighbour of the open case in the worklist's order."""

        def step(values: Values) -> Changes:
            session = values[self.ui.session]
            target = self._neighbour(session, direction)
            if target is None:  # an error, not a notice: it stops the chain that would present the case again
                raise user_error(LAST_CASE if direction > 0 else FIRST_CASE)
            return self._open(session, *target)

        return step

    def _neighbour(self, session: Session, direction: int) -> tuple[int, int] | None:
        """(case id, position) of the case after (or before) the open one, in the worklist's order.

        A case that left the list since it was opened (a verdict moved it out of the filter) is followed by the case
        now at its place.
        """
        current = session.case
        position = None if current is None else current.position
        if position is None:
            start = 0
        elif direction > 0:
            start = position
        else:
            start = position - 1
        if start < 0:
            return None
        with case_errors():
            page = self.cases().store.list_cases(replace(session.worklist, offset=start, limit=2))
        rows = page.cases
        if position is not None and direction > 0 and rows and current is not None and rows[0].id == current.id:
            rows, start = rows[1:], start + 1
        return (rows[0].id, start) if rows else None

    def next_unreviewed(self, values: Values) -> Changes:
        """Open the first unreviewed case in the worklist's order (other than the open one)."""
        session = values[self.ui.session]
        query = CaseQuery(status="unreviewed", sort=session.worklist.sort, limit=2)
        with case_errors():
            page: CasePage = self.cases().store.list_cases(query)
        current = session.case.id if session.case else None
        found = [(n, case) for n, case in enumerate(page.cases) if case.id != current]
        if not found:
            raise user_error("Every case has a verdict: there is no unreviewed case left.")
        position, case = found[0]
        same_order = session.worklist.status == "unreviewed" and session.worklist.reviewer is None
        return self._open(session, case.id, position if same_order else None)

    def reload(self, values: Values) -> Changes:
        """Open the tab's case again, as it is stored now (after someone else changed it)."""
        session = values[self.ui.session]
        case = session.require_case()
        return self._open(session, case.id, case.position)

    def _open(self, session: Session, case_id: int, position: int | None) -> Changes:
        """Show a stored case's latest revision in every tab; the chain then presents it (`ReviewEvents.present`)."""
        with case_errors():
            store = self.cases()
            case = store.store.get_case(case_id)
            review = case_review(store, case, case.latest_revision, self.card())
        session.start(review)
        session.case = OpenCase(case.id, case.version, case.name, position)
        return {self.ui.session: session, self.ui.tabs: gr.Tabs(selected="viewer"), self.c.score: 0, self.c.note: ""}

    def show_case(self, values: Values) -> Changes:
        """The case bar, viewer, revisions, verdict history and comparison choices of the tab's open case."""
        c, session = self.c, values[self.ui.session]
        if session.case is None:
            return {c.case_info: case_bar(None, None), c.revisions: revisions_html(None)}
        with case_errors():
            case = self.cases().store.get_case(session.case.id)
        return self._case_views(session, case)

    def case_outputs(self) -> list[Any]:
        """What `show_case` changes: case bar, viewer, revisions, verdict history, comparison choices, worklist."""
        c = self.c
        return [c.case_info, c.viewer, c.revisions, c.history, c.compare_with, c.table, c.pager]

    def then_show_case(self, step: Any) -> Any:
        """`step`, then `show_case` (a link of the chains that open or store a case)."""
        return step.then(self.show_case, {self.ui.session}, self.case_outputs(), **PRIVATE)

    def _case_views(self, session: Session, case: CaseDetail) -> Changes:
        c = self.c
        later = [(f"revision {r.revision} by {r.author}", r.revision) for r in case.revisions if r.revision > 0]
        return {
            c.case_info: case_bar(case, session.case),
            c.viewer: self._payload(session, case),
            c.revisions: revisions_html(case),
            c.history: verdict_history(case),
            c.compare_with: gr.Dropdown(choices=later, value=later[-1][1] if later else None),
            **self._worklist(session, session.worklist),
        }

    def _payload(self, session: Session, case: CaseDetail) -> dict[str, Any]:
        review = session.review
        shown = review is not None and review.case_id == case.id
        classes = review.classes if shown and review else case_card(case.classes, self.card()).classes
        low, high = (0.0, 1.0)
        if shown and review is not None:
            width, level = auto_window(review)
            low, high = level - width / 2, level + width / 2
        return payload(case, classes, (low, high), session.reviewer or None)

    # Verdicts and corrections

    def verdict(self, verdict: Verdict) -> Callable[[Values, gr.Request], Changes]:
        """The handler of one verdict button (and its key): record it for the open case, as this tab loaded it."""

        def record(values: Values, request: gr.Request) -> Changes:
            c, session = self.c, values[self.ui.session]
            opened = session.require_case()
            score = int(values[c.score] or 0) or None
            note = (values[c.note] or "")[:MAX_NOTE]
            with case_errors(f"Case {opened.name}"):
                who = reviewer_name(getattr(request, "username", None), values[c.reviewer] or session.reviewer)
                case = self.cases().record_review(opened.id, opened.version, verdict=verdict, score=score,
                                                  note=note, reviewer=who)  # fmt: skip
            session.case = replace(opened, version=case.version)
            gr.Info(f"{case.name}: {verdict.replace('_', ' ')} (by {who}).")
            return {**self._case_views(session, case), c.note: "", c.score: 0, self.ui.session: session}

        return record

    def saved(self, values: Values, event: gr.EventData) -> Changes:
        """The viewer saved a correction: the tab holds the version it made, and every tab shows the new revision."""
        session = values[self.ui.session]
        data = getattr(event, "_data", None) or {}
        opened = session.case
        if opened is None or data.get("case") != opened.id:
            return {self.ui.session: session}
        session.case = replace(opened, version=int(data.get("version", opened.version)))
        with case_errors(f"Case {opened.name}"):
            store = self.cases()
            case = store.store.get_case(opened.id)
            session.start(case_review(store, case, int(data.get("revision", case.latest_revision)), self.card()))
        return {**self._case_views(session, case), self.ui.session: session}

    def compare(self, values: Values) -> Changes:
        """Compare the open case's prediction (revision 0) with a later revision: the Agreement tab and the errors
        overlay then show what the reviewer changed (itself a QC figure)."""
        c, session = self.c, values[self.ui.session]
        opened = session.require_case()
        revision = values[c.compare_with]
        if revision is None:
            raise user_error("This case has no correction yet: save one in the Viewer tab first.")
        with case_errors(f"Case {opened.name}"):
            store = self.cases()
            case = store.store.get_case(opened.id)
            base = case_review(store, case, 0, self.card())
            compared = attach_reference(base, store.mask_path(case, int(revision)), max_voxels=store.limits.max_voxels)
        session.start(compared)
        gr.Info(f"Revision 0 (the prediction) compared with revision {revision}: see the Agreement tab.")
        return {self.ui.session: session, self.ui.overlay: "errors"}

    # gradio_client /review

    def review_api(
        self, case_id: Any, verdict: Any, score: Any, note: Any, reviewer: Any, etag: Any, request: gr.Request
    ) -> dict[str, Any]:
        """Record a verdict for a case: returns the case (the JSON of GET /v1/cases/{id}) after it."""
        with case_errors(f"Case {case_id}"):
            store = self.cases()
            answer = record_from_api(store, getattr(request, "username", None), case_id=case_id, verdict=verdict,
                                     score=score, note=note, reviewer=reviewer, etag=etag)  # fmt: skip
        return answer


def wire_cases(cases: CaseEvents, demo: gr.Blocks) -> None:
    """Connect the review's events to `cases`' handlers (inside `demo`'s context)."""
    ui, c, events = cases.ui, cases.c, cases.events
    demo.load(cases.startup, {ui.session}, [c.reviewer, c.table, c.pager, ui.session], **PRIVATE)
    for typed in (c.reviewer.blur, c.reviewer.submit):
        typed(cases.remember_reviewer, {ui.session, c.reviewer}, [ui.session, c.viewer], **PRIVATE)
    listed = [c.table, c.pager, ui.session]
    filters: set[Any] = {ui.session, c.status_filter, c.reviewer_filter, c.sort}
    for changed in (c.status_filter.input, c.sort.input, c.reviewer_filter.submit, c.refresh.click):
        changed(cases.filter_worklist, filters, listed, **PRIVATE)
    c.previous_page.click(cases.turn_page(-1), {ui.session}, listed, **PRIVATE)
    c.next_page.click(cases.turn_page(1), {ui.session}, listed, **PRIVATE)
    shown = cases.case_outputs()
    opening = [(c.table.select, cases.open_row), (c.next.click, cases.step(1)), (c.previous.click, cases.step(-1)),
               (c.next_unreviewed.click, cases.next_unreviewed), (c.reload.click, cases.reload)]  # fmt: skip
    for trigger, handler in opening:
        opened = trigger(handler, {ui.session}, [ui.session, ui.tabs, c.score, c.note], **PRIVATE)
        events.then_present(opened, then=cases.then_show_case)
    verdict_in: set[Any] = {ui.session, c.reviewer, c.score, c.note}
    for verdict, button in c.verdicts.items():
        button.click(
            cases.verdict(cast(Verdict, verdict)), verdict_in, [*shown, c.note, c.score, ui.session], **PRIVATE
        )
    events.then_present(c.viewer.submit(cases.saved, {ui.session}, [*shown, ui.session], **PRIVATE))
    events.then_present(
        c.compare.click(cases.compare, {ui.session, c.compare_with}, [ui.session, ui.overlay], **PRIVATE)
    )
    api_in = [c.api_case, c.api_verdict, c.api_score, c.api_note, c.api_reviewer, c.api_version]
    c.api_trigger.click(cases.review_api, api_in, c.api_result, concurrency_limit=None, **REVIEW_API)
