"""The UI's handlers without a browser: what a page shows after each step (pictures, tables, sliders, messages).

`Page` stands in for the browser: it holds the components' values, applies what each handler returns, and redraws
the views whenever a handler asks for it, as the page does through `ReviewEvents.render`.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any

import gradio as gr
import nibabel as nib
import numpy as np
import pytest
from gradio.components.base import FormComponent
from PIL import Image

from api.service import SegmentationService
from api.settings import Settings
from api.ui.errors import uploaded_path
from api.ui.events import ReviewEvents
from api.ui.layout import build_layout
from api.ui.markup import CURSOR_HINT
from api.ui.rendering import PLANES, display_size, hex_to_rgb, render
from api.ui.review import cursor_info
from api.ui.state import SegmentOptions, Session
from api.ui.views import style_for

RED, GREEN = hex_to_rgb("#ff0000"), hex_to_rgb("#00ff00")  # the tiny model's shell and core


class ProgressRecorder:
    """Stands in for gr.Progress, which only works inside a running Gradio event."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, str]] = []

    def __call__(self, fraction: float, desc: str = "") -> None:
        self.calls.append((fraction, desc))


class Page:
    """One browser tab: component values, changed by the handlers' answers; views redrawn when asked."""

    def __init__(self, events: ReviewEvents) -> None:
        self.events, self.ui = events, events.ui
        self.values: dict[Any, Any] = {}
        self.updates: dict[Any, gr.components.Component] = {}  # the last property update of each component
        for component in vars(self.ui).values():
            for one in component.values() if isinstance(component, dict) else [component]:
                self.values[one] = copy.deepcopy(getattr(one, "value", None))
        self.apply(events.startup())

    @property
    def session(self) -> Session:
        return self.values[self.ui.session]

    def apply(self, changes: dict[Any, Any]) -> dict[Any, Any]:
        for component, value in changes.items():
            if isinstance(value, gr.components.Component):  # an update written as a component: gr.Slider(maximum=...)
                self.updates[component] = value
                if isinstance(value, FormComponent):  # the handlers give controls their value with their range
                    self.values[component] = value.value
            else:
                self.values[component] = value
        if self.ui.redraw in changes:
            self.apply(self.events.render(self.values))
        return changes

    def segment(self, volume: Path, *, uncertainty: bool = True, progress: ProgressRecorder | None = None) -> None:
        """Choose `volume` and press Segment."""
        ui = self.ui
        self.values[ui.volume], self.values[ui.uncertainty] = str(volume), uncertainty
        self.apply(self.events.store_options(self.values))
        mask, summary, session = self.events.segment(str(volume), self.session, progress or ProgressRecorder())
        self.apply({ui.mask_file: mask, ui.summary: summary, ui.session: session})
        self.apply(self.events.present(self.values))

    def move(self, component: Any, value: Any) -> None:
        """The user moves a control: the views are drawn for it."""
        self.values[component] = value
        self.apply(self.events.render(self.values))

    def picture(self, plane: str) -> np.ndarray:
        with Image.open(self.values[self.ui.images[plane]]) as picture:
            return np.asarray(picture.convert("RGB"))

    def indices(self) -> tuple[int, int, int]:
        axial, coronal, sagittal = (int(self.values[self.ui.sliders[plane]]) for plane in PLANES)
        return axial, coronal, sagittal


@pytest.fixture
def page(service, layout) -> Page:
    page = Page(ReviewEvents(lambda: service, layout))
    yield page
    page.session.close()


@pytest.fixture
def uploaded_volume(upload_folder, nifti) -> Path:
    path = upload_folder / "abc123" / "t1.nii.gz"
    path.parent.mkdir()
    path.write_bytes(nifti.encode(nifti.blob()))
    return path


def upload_mask(upload_folder: Path, name: str, session: Session, *, shape: tuple[int, ...] | None = None) -> Path:
    """The review's own mask as an uploaded reference (or, given `shape`, a mask on another grid)."""
    mask = nib.load(session.require_review().files[0])
    labels = np.asarray(mask.dataobj) if shape is None else np.zeros(shape, np.uint8)
    path = upload_folder / name / "reference.nii.gz"
    path.parent.mkdir()
    nib.save(nib.Nifti1Image(labels, mask.affine), path)
    return path


def click(pixel: Any) -> gr.SelectData:
    """What Gradio hands the handler for a click on a picture at `pixel` ([column, row])."""
    return gr.SelectData(None, {"index": pixel, "value": None})


def tinted(picture: np.ndarray, color: tuple[int, int, int]) -> int:
    """Pixels whose colour leans towards `color` (a pure red or green class colour over grey)."""
    channel = int(np.argmax(color))
    others = [c for c in range(3) if c != channel]
    return int(((picture[..., channel].astype(int) - picture[..., others].max(axis=-1)) > 40).sum())


@pytest.mark.parametrize("value", ["/etc/passwd", "/proc/self/environ"])
def test_uploaded_path_refuses_server_files(upload_folder, value):
    with pytest.raises(gr.Error, match="uploaded through this page"):
        uploaded_path(value)


def test_uploaded_path_refuses_escapes_from_the_upload_folder(upload_folder, tmp_path):
    outside = tmp_path / "secret.nii.gz"
    outside.write_bytes(b"x")
    with pytest.raises(gr.Error, match="uploaded through this page"):
        uploaded_path(str(upload_folder / ".." / "secret.nii.gz"))


def test_uploaded_path_asks_for_a_volume_when_nothing_is_chosen(upload_folder):
    with pytest.raises(gr.Error, match="Choose a volume first"):
        uploaded_path(None)


def test_a_page_opens_with_the_model_in_the_header_and_its_classes_to_toggle(page, service):
    ui = page.ui
    assert "shell, core" in page.values[ui.header] and "background" not in page.values[ui.header]
    assert page.values[ui.shown] == ["shell", "core"] and page.values[ui.surface_classes] == ["shell", "core"]
    assert page.updates[ui.class_plot].color_map == {"background": "#000000", "shell": "#ff0000", "core": "#00ff00"}
    assert CURSOR_HINT in page.events.cursor(page.values)  # nothing segmented yet


def test_segment_returns_mask_summary_and_a_session_with_the_review(service, layout, uploaded_volume):
    events, progress = ReviewEvents(lambda: service, layout), ProgressRecorder()
    mask, summary, session = events.segment(str(uploaded_volume), Session(), progress)
    assert Path(mask).name == "t1_mask.nii.gz" and Path(mask).is_file()
    assert summary["filename"] == "t1.nii.gz"
    assert session.require_review().layers.entropy is not None and session.review.source == uploaded_volume
    stages = [desc for _, desc in progress.calls]
    assert stages[:2] == ["Waiting for memory for the review", "Waiting for a free inference slot"]
    assert {"Loading the volume", "Preprocessing", "Running the network", "Post-processing"} <= set(stages)
    fractions = [f for f, _ in progress.calls]
    assert fractions == sorted(fractions)
    # the review's memory counts against the UI's budget (8 bytes a voxel) until the tab closes
    assert events.memory.budget.held(id(session)) == session.review.layers.image.size * 8
    session.close()
    assert session.review is None and events.memory.budget.total == 0


def test_segmenting_again_replaces_and_cleans_the_previous_review(page, uploaded_volume):
    page.segment(uploaded_volume)
    first = page.session.require_review()
    page.segment(uploaded_volume)
    assert not first.workdir.exists() and page.session.require_review().workdir.exists()


def test_segment_turns_library_errors_into_messages(service, layout, upload_folder):
    bogus = upload_folder / "x" / "notes.nii.gz"
    bogus.parent.mkdir()
    bogus.write_text("hello")
    with pytest.raises(gr.Error, match="not gzip-compressed") as refused:
        ReviewEvents(lambda: service, layout).segment(str(bogus), Session(), ProgressRecorder())
    assert refused.value.print_exception is False  # a user's mistake: no traceback in the server log


def test_segment_says_busy_when_the_queue_is_full(service, layout, uploaded_volume):
    with service.slots.admit(), pytest.raises(gr.Error, match="busy"):
        ReviewEvents(lambda: service, layout).segment(str(uploaded_volume), Session(), ProgressRecorder())


def test_segment_with_options_returns_the_probabilities_only_when_asked(service, layout, uploaded_volume):
    events = ReviewEvents(lambda: service, layout)
    _, _, none, session = events.segment_with_options(str(uploaded_volume), False, False, Session(), ProgressRecorder())
    assert none is None and session.require_review().layers.entropy is None  # no uncertainty map for the API
    _, summary, saved, session = events.segment_with_options(str(uploaded_volume), True, True, session,
                                                             ProgressRecorder())  # fmt: skip
    assert Path(saved).name == "t1_probabilities.nii.gz" and summary["tta"] is True
    assert nib.load(saved).shape == (24, 20, 16, 3)
    session.close()


def test_after_segmenting_the_page_shows_the_review(page, uploaded_volume):
    page.segment(uploaded_volume)
    ui, review = page.ui, page.session.require_review()
    assert "**t1.nii.gz** · 24 × 20 × 16 voxels" in page.values[ui.status]
    assert [Path(f).name for f in page.values[ui.downloads]] == ["t1_mask.nii.gz", "t1_summary.json"]
    assert list(page.values[ui.class_table]["class"]) == ["background", "shell", "core"]
    assert "mL" in page.values[ui.legend]
    x, y, z = review.layers.shape
    assert [page.updates[ui.sliders[p]].maximum for p in PLANES] == [z - 1, y - 1, x - 1]
    assert all(page.updates[s].interactive for s in (*ui.sliders.values(), ui.window, ui.level))
    for plane, index in zip(PLANES, page.indices(), strict=True):  # drawn through the foreground's centre
        assert Path(page.values[ui.images[plane]]).name == f"t1_{plane}_{index:03d}.png"
        picture = page.picture(plane)
        assert picture.shape[1::-1] == display_size(review.layers, plane)
        assert tinted(picture, RED) + tinted(picture, GREEN) > 0, f"no class drawn in the {plane} view"


def test_before_any_segmentation_moving_a_control_draws_nothing(page):
    changes = page.events.render(page.values)
    assert not set(changes) & set(page.ui.images.values())


def test_each_view_shows_the_slice_its_own_slider_names(page, uploaded_volume):
    page.segment(uploaded_volume)
    ui, review = page.ui, page.session.require_review()
    page.values[ui.crosshair] = False
    for plane, index in zip(PLANES, (3, 9, 14), strict=True):  # axial (z), coronal (y), sagittal (x): all different
        page.values[ui.sliders[plane]] = index
    page.move(ui.opacity, 0.4)
    style = style_for(review, page.events._view_inputs(page.values))
    for plane, index in zip(PLANES, (3, 9, 14), strict=True):
        assert np.array_equal(page.picture(plane), render(review.layers, plane, index, style)), plane


def test_hiding_a_class_takes_its_colour_off_the_views(page, uploaded_volume):
    page.segment(uploaded_volume)
    page.move(page.ui.crosshair, False)  # its yellow would count as red
    both = page.picture("axial")
    page.move(page.ui.shown, ["core"])
    only_core = page.picture("axial")
    assert tinted(both, RED) > 0 and tinted(only_core, RED) == 0
    assert tinted(only_core, GREEN) == tinted(both, GREEN)


def test_a_click_on_one_view_moves_the_other_two_there(page, uploaded_volume):
    page.segment(uploaded_volume)
    ui, review = page.ui, page.session.require_review()
    axial = page.indices()[0]
    coronal_before = page.values[ui.images["coronal"]]
    width, height = display_size(review.layers, "axial")
    x, y, _ = review.layers.shape
    # Bottom-left of an axial view is the patient's right and back; top-right is left and front.
    page.apply(page.events.navigate_from("axial")(page.values, click([0, height - 1])))
    assert page.indices() == (axial, 0, x - 1)
    assert page.values[ui.images["coronal"]] != coronal_before  # redrawn at the new place
    page.apply(page.events.navigate_from("axial")(page.values, click([width - 1, 0])))
    assert page.indices() == (axial, y - 1, 0)
    page.apply(page.events.navigate_from("axial")(page.values, click(None)))
    assert page.indices() == (axial, y - 1, 0)  # not a point on the picture: nothing moves


def test_a_click_before_segmenting_asks_for_a_segmentation(page):
    with pytest.raises(gr.Error, match="Segment a volume first"):
        page.events.navigate_from("axial")(page.values, click([1, 1]))


def test_auto_window_brings_back_the_first_picture(page, uploaded_volume):
    page.segment(uploaded_volume)
    ui = page.ui
    first, width, level = page.picture("axial"), page.values[ui.window], page.values[ui.level]
    page.move(ui.window, page.updates[ui.window].minimum)
    assert not np.array_equal(page.picture("axial"), first)
    page.apply(page.events.auto_window(page.values))
    assert (page.values[ui.window], page.values[ui.level]) == (width, level)
    assert np.array_equal(page.picture("axial"), first)


def test_jump_needs_an_uncertainty_map(page, uploaded_volume):
    page.segment(uploaded_volume, uncertainty=False)
    with pytest.raises(gr.Error, match="No uncertainty map: tick 'Uncertainty map' and segment again"):
        page.events.jump(page.values)


def test_jump_moves_to_the_most_uncertain_slices_and_shows_the_uncertainty(page, uploaded_volume):
    page.segment(uploaded_volume)
    ui, review = page.ui, page.session.require_review()
    entropy = np.zeros(review.layers.shape, np.float16)
    entropy[3, 5, 7] = 1.0  # (x, y, z): sagittal 3, coronal 5, axial 7
    page.session.review = replace(review, layers=replace(review.layers, entropy=entropy))
    page.apply(page.events.jump(page.values))
    assert page.indices() == (7, 5, 3) and page.values[ui.overlay] == "uncertainty"
    assert Path(page.values[ui.images["axial"]]).name == "t1_axial_007.png"


def test_an_overlay_without_its_data_falls_back_to_the_classes_and_says_why(page, uploaded_volume):
    page.segment(uploaded_volume, uncertainty=False)
    ui = page.ui
    classes = page.picture("axial")
    for overlay, reason in (("errors", "Errors need a reference mask"), ("uncertainty", "No uncertainty map")):
        page.values[ui.overlay] = overlay
        with pytest.warns(UserWarning, match=reason):
            assert page.events.check_overlay(page.values) == "classes"
        page.move(ui.overlay, overlay)  # the views meanwhile: the classes, not an empty overlay
        assert np.array_equal(page.picture("axial"), classes)
    page.values[ui.overlay] = "outlines"
    assert page.events.check_overlay(page.values) == gr.skip()  # available: the choice stays


def test_a_new_segmentation_keeps_the_chosen_overlay_when_it_has_the_data(page, uploaded_volume):
    for chosen, shown in (("outlines", "outlines"), ("classes", "classes"), ("uncertainty", "classes"),
                          ("errors", "classes")):  # fmt: skip
        page.values[page.ui.overlay] = chosen
        page.segment(uploaded_volume, uncertainty=False)  # no uncertainty map, no reference
        assert page.values[page.ui.overlay] == shown, chosen


def test_a_reference_uploaded_before_its_volume_is_segmented_waits_for_it(page, uploaded_volume, upload_folder,
                                                                          capsys):  # fmt: skip
    ui = page.ui
    page.segment(uploaded_volume)
    reference = str(upload_mask(upload_folder, "ref1", page.session))
    other = uploaded_volume.parent.parent / "def456" / "other.nii.gz"
    other.parent.mkdir()
    other.write_bytes(uploaded_volume.read_bytes())
    page.values[ui.volume], page.values[ui.reference] = str(other), reference  # another volume chosen, not segmented
    changes = page.apply(page.events.compare(page.values))
    assert "Reference mask kept for other.nii.gz" in capsys.readouterr().out
    assert ui.agreement not in changes and page.session.reference_owner == other
    page.segment(other)  # its segmentation compares it, and the views open on the errors
    assert page.values[ui.overlay] == "errors" and page.values[ui.reference] == reference
    assert page.values[ui.agreement]["Dice"].dropna().eq(1.0).all()  # the same labels on the same grid
    assert "agrees" in page.events.cursor(page.values)
    page.segment(uploaded_volume)  # yet another volume: the reference is not its own and leaves the box
    assert page.values[ui.reference] is None and page.session.require_review().metrics is None
    assert page.values[ui.overlay] == "classes" and page.values[ui.agreement].empty


def test_a_reference_for_the_review_shown_is_compared_at_once_and_removed_with_its_box(page, uploaded_volume,
                                                                                       upload_folder):  # fmt: skip
    ui = page.ui
    page.segment(uploaded_volume)
    classes = page.picture("axial")
    page.values[ui.reference] = str(upload_mask(upload_folder, "ref1", page.session))
    page.apply(page.events.compare(page.values))
    assert page.values[ui.overlay] == "errors" and not page.values[ui.agreement].empty
    assert not page.values[ui.iou_plot]["IoU"].isna().any()
    errors = page.picture("axial")  # a perfect reference: the classes, faint
    assert tinted(errors, RED) + tinted(errors, GREEN) < tinted(classes, RED) + tinted(classes, GREEN)
    page.values[ui.reference] = None
    page.apply(page.events.compare(page.values))
    assert page.values[ui.overlay] == "classes" and page.values[ui.agreement].empty
    assert page.values[ui.iou_plot]["IoU"].isna().all()  # the axes and the legend stay, no curve
    assert np.array_equal(page.picture("axial"), classes)


def test_a_reference_on_another_grid_is_refused_and_taken_out_of_its_box(page, uploaded_volume, upload_folder):
    ui = page.ui
    page.segment(uploaded_volume)
    page.values[ui.reference] = str(upload_mask(upload_folder, "ref2", page.session, shape=(5, 5, 5)))
    with pytest.warns(UserWarning, match="same voxel grid"):
        changes = page.apply(page.events.compare(page.values))
    assert changes[ui.reference] is None and page.session.require_review().metrics is None
    page.values[ui.reference] = str(upload_mask(upload_folder, "ref3", page.session, shape=(5, 5, 5)))
    with pytest.warns(UserWarning, match="same voxel grid"):  # refused as well when it waited for the segmentation
        page.segment(uploaded_volume)
    assert page.values[ui.reference] is None and page.values[ui.overlay] == "classes"


def test_the_cursor_readout_names_the_voxel_of_the_uploaded_file(page, upload_folder, nifti):
    path = upload_folder / "obl" / "t1.nii.gz"
    path.parent.mkdir()
    blob = nifti.blob()
    path.write_bytes(nifti.encode(blob, nifti.oblique_affine()))  # flipped x and y: canonical order differs
    page.segment(path)
    ui, review = page.ui, page.session.require_review()
    affine = nib.load(path).affine
    for point in [(0, 0, 0), (3, 17, 9), (23, 1, 15)]:
        info = cursor_info(review, point)
        i, j, k = info.voxel
        assert info.intensity == blob[i, j, k]  # the uploaded file's own voxel
        assert np.allclose(info.world_mm, (affine @ [i, j, k, 1])[:3])
        assert info.intensity == review.layers.image[point]
        assert info.predicted == review.class_names[review.layers.mask[point]]
        assert info.reference is None and info.uncertainty is not None
    assert cursor_info(review, (0, 0, 0)).voxel != (0, 0, 0)  # the flips are undone, not ignored
    assert cursor_info(review, (-5, 99, 7)) == cursor_info(review, (0, review.layers.shape[1] - 1, 7))  # clamped
    for plane, index in zip(PLANES, (9, 17, 3), strict=True):  # sliders: axial (z), coronal (y), sagittal (x)
        page.values[ui.sliders[plane]] = index
    line, info = page.events.cursor(page.values), cursor_info(review, (3, 17, 9))
    assert f"({info.voxel[0]}, {info.voxel[1]}, {info.voxel[2]})" in line and "mm" in line and "uncertainty" in line
    assert "reference" not in line


def test_the_surface_tab_draws_the_chosen_classes(page, uploaded_volume):
    ui = page.ui
    assert page.events.surface(page.values) is None  # nothing segmented yet
    page.segment(uploaded_volume)
    drawn = page.events.surface(page.values)
    assert drawn is not None and Path(drawn).read_bytes()[:4] == b"glTF"
    page.values[ui.surface_classes] = []
    assert page.events.surface(page.values) is None


def test_saving_probabilities_does_not_need_the_uncertainty_map(page, uploaded_volume):
    ui = page.ui
    page.values[ui.keep_probabilities] = True
    page.segment(uploaded_volume, uncertainty=False)
    assert page.session.options == SegmentOptions(uncertainty=False, tta=False, save_probabilities=True)
    names = [Path(f).name for f in page.values[ui.downloads]]
    assert names == ["t1_mask.nii.gz", "t1_summary.json", "t1_probabilities.nii.gz"]
    assert page.session.require_review().layers.entropy is not None  # made from the probabilities anyway


LENIENT_BRAIN_CARD = {
    "name": "tiny-brain", "version": "0.0.1",
    "classes": [{"name": "background", "color": "#000000"}, {"name": "grey_matter", "color": "#e69f00"},
                {"name": "white_matter", "color": "#56b4e9"}],
    "input": {"channels": 1, "clip_percentiles": [1, 99], "pad_to_multiple": 4, "spacing_mm": None},
    "inference": {"patch_size": [16, 16, 16], "overlap": 0.25, "crop_foreground": False},
    # A random network's mask: only the CT check keeps its default limit, the rest cannot warn.
    "qc": {"limits": {"uncertainty": {"ok": 0.5, "warn": 1.5}, "cut_fraction": {"ok": 0.5, "warn": 1.5},
                      "structure": {"ok": 0.5, "warn": -1.5}, "fov_fraction": {"ok": 0.01, "warn": 0.0},
                      "brain_ml_min": {"ok": 0.001, "warn": 0.0}, "brain_ml_max": {"ok": 1e6, "warn": 1e7}}},
}  # fmt: skip


@pytest.fixture(scope="module")
def brain_page(tmp_path_factory):
    from helpers import write_tiny_model

    model = write_tiny_model(tmp_path_factory.mktemp("tiny-brain"), card=LENIENT_BRAIN_CARD)
    service = SegmentationService.from_settings(Settings(UNET3D_MODEL=str(model), queue_size=0))
    with gr.Blocks():
        layout = build_layout()
    page = Page(ReviewEvents(lambda: service, layout))
    yield page
    page.session.close()


def test_the_qc_warnings_show_as_a_banner_above_the_views_and_only_then(brain_page, upload_folder, nifti):
    ui = brain_page.ui
    assert brain_page.updates.get(ui.qc_banner) is None and ui.qc_banner.visible is False  # nothing before
    ct = np.where(nifti.blob() > 300, 40.0, -1000.0).astype(np.float32)  # Hounsfield units
    for name, data, shown in (("ct", ct, True), ("mri", np.abs(ct), False)):
        path = upload_folder / name / f"{name}.nii.gz"
        path.parent.mkdir()
        path.write_bytes(nifti.encode(data))
        brain_page.segment(path)
        banner, warnings = brain_page.updates[ui.qc_banner], brain_page.values[ui.summary]["qc"]["warnings"]
        assert banner.visible is shown and bool(warnings) is shown
        if shown:
            assert 'role="alert"' in banner.value and "CT scan" in banner.value
            assert all(w.split(":")[0] in banner.value for w in warnings)
