"""The review of stored cases in the UI, without a browser: a segmentation kept as a case, the worklist, opening a
case, next/previous, verdicts (stale ones refused), a saved correction, the comparison and gradio_client's /review.

`Page` stands in for the browser as in test_ui_events.py, against a real case store (SQLite) and the tiny model.
"""

from __future__ import annotations

import copy
import re
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gradio as gr
import nibabel as nib
import numpy as np
import pytest
from gradio.components.base import FormComponent

from api.cases.service import CaseService, Provenance
from api.cases.store import NewCase, NewMask
from api.settings import Settings
from api.ui.caseevents import CaseEvents
from api.ui.events import ReviewEvents
from api.ui.viewer import viewer_markup

ROOT = Path(__file__).resolve().parents[2]


class Page:
    """One browser tab: component values, changed by the handlers' answers, with the chains the page runs."""

    def __init__(self, events: ReviewEvents, user: str | None = None) -> None:
        self.events, self.ui, self.c = events, events.ui, events.ui.cases
        self.cases: CaseEvents = events.cases
        self.request = SimpleNamespace(username=user)
        self.values: dict[Any, Any] = {}
        for component in [*_components(vars(self.ui)), *_components(vars(self.c))]:
            self.values[component] = copy.deepcopy(getattr(component, "value", None))
        self.apply(events.startup())
        self.apply(self.cases.startup(self.values, self.request))

    @property
    def session(self) -> Any:
        return self.values[self.ui.session]

    def apply(self, changes: dict[Any, Any]) -> dict[Any, Any]:
        for component, value in changes.items():
            if isinstance(value, gr.blocks.Block):  # an update: only the arguments given change
                if isinstance(value, FormComponent) and "value" in value.constructor_args:
                    self.values[component] = value.value
                self.values.setdefault(("update", component), []).append(value)
            else:
                self.values[component] = value
        if self.ui.redraw in changes:
            self.apply(self.events.render(self.values))
        return changes

    def show(self, changes: dict[Any, Any]) -> dict[Any, Any]:
        """An opening handler's answer, then the chain that follows it in the page (present, then show_case)."""
        self.apply(changes)
        self.apply(self.events.present(self.values))
        return self.apply(self.cases.show_case(self.values))

    def segment(self, volume: Path) -> None:
        mask, summary, session = self.events.segment(str(volume), self.session, lambda *_, **__: None)
        self.apply({self.ui.mask_file: mask, self.ui.summary: summary, self.ui.session: session})
        self.show({})

    def type_reviewer(self, name: str) -> None:
        self.values[self.c.reviewer] = name
        self.apply(self.cases.remember_reviewer(self.values))

    def verdict(self, verdict: str, *, score: int = 0, note: str = "") -> None:
        self.values[self.c.score], self.values[self.c.note] = score, note
        self.apply(self.cases.verdict(verdict)(self.values, self.request))  # type: ignore[arg-type]

    def open_row(self, row: int) -> None:
        table = self.values[self.c.table]
        selected = gr.SelectData(None, {"index": [row, 1], "value": None, "row_value": list(table.iloc[row])})
        self.show(self.cases.open_row(self.values, selected))

    def filter(self, status: str = "all", reviewer: str = "", sort: str = "id") -> None:
        self.values[self.c.status_filter], self.values[self.c.reviewer_filter] = status, reviewer
        self.values[self.c.sort] = sort
        self.apply(self.cases.filter_worklist(self.values))

    def listed(self) -> list[str]:
        return list(self.values[self.c.table]["case"])


def _components(fields: dict[str, Any]) -> list[Any]:
    found: list[Any] = []
    for value in fields.values():
        for one in value.values() if isinstance(value, dict) else [value]:
            if isinstance(one, gr.blocks.Block):
                found.append(one)
    return found


@pytest.fixture
def cases(tmp_path) -> CaseService:
    opened = CaseService.open(Settings(data_dir=tmp_path / "data"))
    yield opened
    opened.close()


@pytest.fixture
def events(service, layout, cases) -> ReviewEvents:
    return ReviewEvents(lambda: service, layout, lambda: cases)


@pytest.fixture
def page(events) -> Page:
    page = Page(events)
    yield page
    page.session.close()


@pytest.fixture
def uploaded_volume(upload_folder, nifti) -> Path:
    path = upload_folder / "abc123" / "t1.nii.gz"
    path.parent.mkdir()
    path.write_bytes(nifti.encode(nifti.blob()))
    return path


@pytest.fixture
def stored(cases, tmp_path, nifti) -> list[int]:
    """Three cases, a, b and c, made from a volume and a two-class mask (labels 0, 1, 2)."""
    volume = tmp_path / "source" / "volume.nii.gz"
    volume.parent.mkdir()
    blob = nifti.blob()
    volume.write_bytes(nifti.encode(blob))
    mask = tmp_path / "source" / "mask.nii.gz"
    nib.save(nib.Nifti1Image(((blob > 300).astype(np.uint8) + (blob > 700)), nib.load(volume).affine), mask)
    ids = []
    for name in ("a", "b", "c"):
        made = cases.create_from_mask(volume, "volume.nii.gz", mask, "mask.nii.gz", name=name,
                                      card_names=["background", "shell", "core"],
                                      provenance=Provenance(author="import", source="import"))  # fmt: skip
        ids.append(made.id)
    return ids


def copies(cases: CaseService, case_id: int, names: list[str]) -> None:
    """More cases sharing one case's stored files (cheap: the store's content addressing)."""
    case = cases.store.get_case(case_id)
    first = case.revisions[0]
    template = NewCase(
        name="", volume_sha256=case.volume_sha256, volume_suffix=".nii.gz", volume_name=case.volume_name,
        shape=case.shape, spacing_mm=case.spacing_mm, voxel_volume_ml=1.0, classes=case.classes,
        mask=NewMask(first.sha256, "import", "import", [v.voxels for v in first.class_volumes]),
    )  # fmt: skip
    cases.store.create_cases([replace(template, name=name) for name in names])


def test_a_segmentation_in_the_page_is_kept_as_a_case_named_after_the_file(page, cases, uploaded_volume):
    page.segment(uploaded_volume)
    first = page.session.require_case()
    assert first.name == "t1" and page.session.review.case_id == first.id
    stored = cases.store.get_case(first.id)
    assert stored.status == "unreviewed" and stored.revisions[0].source == "prediction"
    assert stored.revisions[0].author.startswith("model:") and stored.model["sha256"]
    payload = page.values[page.c.viewer]
    assert payload["volume"] == f"case-files/{first.id}/volume" and payload["mask"] == f"case-files/{first.id}/masks/0"
    assert [c["label"] for c in payload["classes"]] == ["background", "shell", "core"]
    assert "**t1** (case 1)" in page.values[page.c.case_info]
    page.segment(uploaded_volume)  # the same file again: a second case, not a clash
    assert page.session.require_case().name == "t1 (2)"
    assert page.listed() == ["t1", "t1 (2)"]
    volume_bytes = cases.volume_path(cases.store.get_case(first.id)).read_bytes()
    assert volume_bytes == uploaded_volume.read_bytes()  # the upload, byte for byte


def test_without_a_review_database_a_segmentation_is_shown_but_not_kept(service, layout, uploaded_volume):
    page = Page(ReviewEvents(lambda: service, layout))
    page.segment(uploaded_volume)
    assert page.session.review is not None and page.session.case is None
    assert "No case open" in page.values[page.c.case_info]
    page.session.close()


def test_the_worklist_filters_orders_and_pages(page, cases, stored):
    copies(cases, stored[0], [f"extra-{n:02d}" for n in range(27)])  # 30 cases
    cases.record_review(stored[1], 1, verdict="accepted", score=5, note="", reviewer="ann")
    cases.record_review(stored[2], 1, verdict="rejected", score=None, note="", reviewer="bob")
    page.filter()
    assert page.listed()[:3] == ["a", "b", "c"] and len(page.listed()) == 25
    assert page.values[page.c.pager] == "Cases 1-25 of 30."
    table = page.values[page.c.table]
    assert list(table.columns)[:5] == ["id", "case", "status", "QC warnings", "class volumes (mL)"]
    assert table.iloc[1]["status"] == "accepted" and table.iloc[1]["reviewer"] == "ann" and table.iloc[1]["score"] == 5
    assert "shell" in table.iloc[0]["class volumes (mL)"] and "background" not in table.iloc[0]["class volumes (mL)"]
    page.apply(page.cases.turn_page(1)(page.values))
    assert page.values[page.c.pager] == "Cases 26-30 of 30." and len(page.listed()) == 5
    page.apply(page.cases.turn_page(1)(page.values))  # past the end: stays on the last page
    assert page.values[page.c.pager] == "Cases 26-30 of 30."
    page.filter(status="accepted")
    assert page.listed() == ["b"]
    page.filter(reviewer="bob")
    assert page.listed() == ["c"]
    page.filter(status="unreviewed", sort="-id")
    assert page.listed()[0] == "extra-26" and "b" not in page.listed() and page.session.worklist.offset == 0
    page.filter(status="needs_correction")
    assert page.listed() == [] and "No case matches" in page.values[page.c.pager]


def test_opening_a_row_shows_the_case_in_every_tab(page, stored):
    page.filter()
    page.open_row(1)
    session, c = page.session, page.c
    assert session.require_case().name == "b" and session.case.position == 1
    assert session.review.case_id == stored[1] and session.review.revision == 0
    assert page.values[("update", page.ui.tabs)][-1].constructor_args["selected"] == "viewer"
    assert f"case {stored[1]}, mask revision 0" in page.values[page.ui.status]
    assert list(page.values[page.ui.class_table]["class"]) == ["background", "shell", "core"]
    assert 'data-revision="0"' in page.values[c.revisions] and "import" in page.values[c.revisions]
    assert f'href="case-files/{stored[1]}/masks/0"' in page.values[c.revisions]
    payload = page.values[c.viewer]
    assert payload["etag"] == f'"{stored[1]}.1"' and payload["revision"] == 0
    low, high = payload["window"]
    assert low < high


def test_next_and_previous_follow_the_worklist_order(page, cases, stored):
    page.filter(status="unreviewed")
    page.show(page.cases.step(1)(page.values))  # nothing open: the first case
    assert page.session.require_case().name == "a"
    page.show(page.cases.step(1)(page.values))
    assert page.session.require_case().name == "b"
    page.show(page.cases.step(-1)(page.values))
    assert page.session.require_case().name == "a"
    with pytest.raises(gr.Error, match="first case"):
        page.cases.step(-1)(page.values)
    page.type_reviewer("ann")
    page.verdict("accepted")  # a leaves the unreviewed list: next is the case now in its place
    page.show(page.cases.step(1)(page.values))
    assert page.session.require_case().name == "b"
    page.show(page.cases.step(1)(page.values))
    assert page.session.require_case().name == "c"
    with pytest.raises(gr.Error, match="no case after this one"):
        page.cases.step(1)(page.values)


def test_next_unreviewed_skips_the_open_case_and_says_when_none_is_left(page, cases, stored):
    page.filter()
    page.show(page.cases.next_unreviewed(page.values))
    assert page.session.require_case().name == "a"
    page.show(page.cases.next_unreviewed(page.values))
    assert page.session.require_case().name == "b"
    for case_id in stored:
        cases.record_review(case_id, cases.store.get_case(case_id).version, verdict="accepted", score=None, note="",
                            reviewer="ann")  # fmt: skip
    with pytest.raises(gr.Error, match="Every case has a verdict"):
        page.cases.next_unreviewed(page.values)


def test_a_verdict_is_recorded_under_the_typed_name_and_every_one_is_kept(page, cases, stored):
    page.filter()
    page.open_row(0)
    with pytest.raises(gr.Error, match="Type your name in 'Reviewer'"):
        page.verdict("accepted")
    page.type_reviewer("ann")
    page.verdict("needs_correction", score=3, note="left temporal lobe")
    page.verdict("accepted", score=4)
    case = cases.store.get_case(stored[0])
    assert case.status == "accepted" and case.reviewer == "ann" and case.score == 4
    assert [(r.verdict, r.score, r.note) for r in case.reviews] == [
        ("needs_correction", 3, "left temporal lobe"), ("accepted", 4, "")
    ]  # fmt: skip
    history = page.values[page.c.history]
    assert list(history["verdict"]) == ["Accepted", "Needs correction"]  # newest first
    assert page.values[page.c.score] == 0 and page.values[page.c.note] == ""  # ready for the next case
    assert "status **accepted**" in page.values[page.c.case_info]
    assert page.values[page.c.table].iloc[0]["status"] == "accepted"  # the worklist follows
    assert page.values[page.c.viewer]["etag"] == f'"{stored[0]}.3"'  # the viewer saves from the new version


def test_a_verdict_on_a_case_someone_else_changed_is_refused_until_reloaded(page, cases, stored):
    page.filter()
    page.open_row(0)
    page.type_reviewer("ann")
    cases.record_review(stored[0], 1, verdict="rejected", score=None, note="", reviewer="bob")  # another reviewer
    with pytest.raises(gr.Error, match=r"changed since this tab loaded it.*'Reload case'"):
        page.verdict("accepted")
    assert cases.store.get_case(stored[0]).status == "rejected"  # nothing was overwritten
    page.show(page.cases.reload(page.values))
    assert "by bob" in page.values[page.c.case_info]
    page.verdict("accepted")
    assert cases.store.get_case(stored[0]).status == "accepted"


def test_a_signed_in_reviewer_is_the_name_recorded_and_cannot_sign_as_another(events, cases, stored):
    page = Page(events, user="ann")
    assert page.values[page.c.reviewer] == "ann" and page.session.reviewer == "ann"
    page.filter()
    page.open_row(0)
    page.values[page.c.reviewer] = "mallory"  # the box is read-only; a forged value changes nothing
    page.verdict("accepted")
    assert cases.store.get_case(stored[0]).reviewer == "ann"
    with pytest.raises(gr.Error, match="signed in as 'ann'"):
        page.cases.review_api(stored[1], "accepted", None, "", "bob", "", page.request)
    page.session.close()


def test_a_correction_saved_by_the_viewer_shows_as_the_new_revision(page, cases, stored, tmp_path):
    page.filter()
    page.open_row(0)
    page.type_reviewer("ann")
    case = cases.store.get_case(stored[0])
    labels = np.asarray(nib.load(cases.mask_path(case, 0)).dataobj).copy()
    labels[:4] = 2  # what the brush did
    drawn = tmp_path / "drawn.nii.gz"
    nib.save(nib.Nifti1Image(labels, nib.load(cases.volume_path(case)).affine), drawn)
    number = cases.add_revision(case.id, case.version, drawn, "drawn.nii.gz", "ann")  # as POST case-files does
    event = gr.EventData(None, {"case": case.id, "version": case.version + 1, "revision": number})
    page.show(page.cases.saved(page.values, event))
    assert page.session.require_case().version == case.version + 1 and page.session.review.revision == 1
    assert 'data-revision="1"' in page.values[page.c.revisions] and "ann" in page.values[page.c.revisions]
    assert re.search(r"core \+[\d,]+ −", page.values[page.c.revisions])
    assert page.values[page.c.viewer]["revision"] == 1 and page.values[page.c.viewer]["mask"].endswith("/masks/1")
    assert f"case {case.id}, mask revision 1" in page.values[page.ui.status]
    page.verdict("accepted")  # made from the version the save created: not stale
    assert cases.store.get_case(case.id).status == "accepted"
    # The comparison: revision 0 (the prediction) against the correction, in the Agreement tab.
    assert page.values[page.c.compare_with] == 1
    page.show(page.cases.compare(page.values))
    agreement = page.values[page.ui.agreement]
    core = agreement[agreement["class"] == "core"].iloc[0]
    assert 0 < float(core["Dice"]) < 1
    assert page.values[page.ui.overlay] == "errors" and page.session.review.revision == 0


def test_compare_asks_for_a_correction_when_there_is_none(page, stored):
    page.filter()
    page.open_row(0)
    assert page.values[page.c.compare_with] is None
    with pytest.raises(gr.Error, match="no correction yet"):
        page.cases.compare(page.values)


def test_review_api_records_a_verdict_and_returns_the_case(page, cases, stored):
    answer = page.cases.review_api(stored[0], "needs_correction", 2, "edges", "ann", "", page.request)
    assert answer["status"] == "needs_correction" and answer["reviews"][-1]["note"] == "edges"
    assert answer["etag"] == f'"{stored[0]}.2"'
    again = page.cases.review_api(stored[0], "accepted", None, "", "ann", answer["etag"], page.request)
    assert again["status"] == "accepted" and again["score"] is None
    with pytest.raises(gr.Error, match="changed since this tab loaded it"):
        page.cases.review_api(stored[0], "rejected", None, "", "ann", answer["etag"], page.request)  # stale


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((0, "accepted", None, "", "ann", ""), "Case_id must be a case's id"),
        ((1.5, "accepted", None, "", "ann", ""), "Case_id must be a case's id"),
        ((99, "accepted", None, "", "ann", ""), "No case has id 99"),
        ((1, "fine", None, "", "ann", ""), "Verdict must be one of accepted, needs_correction, rejected"),
        ((1, "accepted", 7, "", "ann", ""), "Score must be a whole number from 1 to 5"),
        ((1, "accepted", None, "", "", ""), "Type your name"),
        ((1, "accepted", None, "", "ann", '"2.1"'), "Etag must be an ETag of case 1"),
    ],
)
def test_review_api_says_what_is_wrong(page, stored, arguments, message):
    with pytest.raises(gr.Error, match=message) as refused:
        page.cases.review_api(*arguments, page.request)
    assert refused.value.print_exception is False


def test_the_keys_of_the_viewer_click_buttons_that_exist(layout):
    script = (ROOT / "api" / "ui" / "static" / "viewer.js").read_text(encoding="utf-8")
    keys = dict(re.findall(r'(\w): "([\w-]+)"', script[script.index("KEY_BUTTONS") : script.index("KEY_TOOLS")]))
    ids = {button.elem_id for button in [*layout.cases.verdicts.values(), layout.cases.next, layout.cases.previous]}
    assert keys == {"a": "verdict-accepted", "n": "verdict-needs_correction", "r": "verdict-rejected",
                    "j": "case-next", "k": "case-prev"}  # fmt: skip
    assert set(keys.values()) == ids
    assert all(f"<b>{key}</b>" in viewer_markup() for key in keys)  # the page shows them


def test_the_viewer_markup_is_a_valid_gradio_template():
    # Gradio evaluates html_template as a JavaScript template string.
    assert "`" not in viewer_markup() and "${" not in viewer_markup()
