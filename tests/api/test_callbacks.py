"""UI callbacks without a browser: upload checks, segmentation, rendering, user-facing errors."""

from __future__ import annotations

import os
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from api.callbacks import ReviewCallbacks, SegmentOptions, ViewInputs, uploaded_path
from api.service import SegmentationService
from api.settings import Settings
from api.views import display_size


class ProgressRecorder:
    """Stands in for gr.Progress, which only works inside a running Gradio event."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, str]] = []

    def __call__(self, fraction: float, desc: str = "") -> None:
        self.calls.append((fraction, desc))


@pytest.fixture
def upload_folder(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "gradio-uploads"
    folder.mkdir()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(folder))
    return folder


@pytest.fixture(scope="module")
def service(tiny_model_dir) -> SegmentationService:
    return SegmentationService.from_settings(Settings(UNET3D_MODEL=str(tiny_model_dir), queue_size=0))


@pytest.fixture
def uploaded_volume(upload_folder, nifti) -> Path:
    path = upload_folder / "abc123" / "t1.nii.gz"
    path.parent.mkdir()
    path.write_bytes(nifti.encode(nifti.blob()))
    return path


def view_inputs(**overrides) -> ViewInputs:
    values = {"indices": (8, 10, 12), "window": 1000.0, "level": 500.0, "opacity": 0.4, "visible": ("shell", "core"),
              "overlay": "classes", "crosshair": True}  # fmt: skip
    return ViewInputs(**(values | overrides))


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


def test_segment_returns_mask_summary_and_review(service, uploaded_volume):
    progress = ProgressRecorder()
    mask, summary, review = ReviewCallbacks(lambda: service).segment(
        str(uploaded_volume), SegmentOptions(), None, progress
    )
    assert Path(mask).name == "t1_mask.nii.gz"
    assert Path(mask).is_file()
    assert summary["filename"] == "t1.nii.gz"
    assert review.layers.entropy is not None
    stages = [desc for _, desc in progress.calls]
    assert stages[0] == "Waiting for a free inference slot"
    assert {"Loading the volume", "Preprocessing", "Running the network", "Post-processing"} <= set(stages)
    fractions = [f for f, _ in progress.calls]
    assert fractions == sorted(fractions)
    review.close()


def test_segment_replaces_and_cleans_the_previous_review(service, uploaded_volume):
    callbacks = ReviewCallbacks(lambda: service)
    _, _, first = callbacks.segment(str(uploaded_volume), SegmentOptions(), None, ProgressRecorder())
    _, _, second = callbacks.segment(str(uploaded_volume), SegmentOptions(), first, ProgressRecorder())
    assert not first.workdir.exists()
    assert second.workdir.exists()
    second.close()


def test_segment_turns_library_errors_into_messages(service, upload_folder):
    bogus = upload_folder / "x" / "notes.nii.gz"
    bogus.parent.mkdir()
    bogus.write_text("hello")
    with pytest.raises(gr.Error, match="not gzip-compressed") as refused:
        ReviewCallbacks(lambda: service).segment(str(bogus), SegmentOptions(), None, ProgressRecorder())
    assert refused.value.print_exception is False  # a user's mistake: no traceback in the server log


def test_segment_says_busy_when_the_queue_is_full(service, uploaded_volume):
    with service.slots.admit(), pytest.raises(gr.Error, match="busy"):
        ReviewCallbacks(lambda: service).segment(str(uploaded_volume), SegmentOptions(), None, ProgressRecorder())


def test_render_draws_three_views_from_the_cache(service, uploaded_volume):
    callbacks = ReviewCallbacks(lambda: service)
    _, _, review = callbacks.segment(str(uploaded_volume), SegmentOptions(), None, ProgressRecorder())
    paths = callbacks.render(review, view_inputs())
    for path, plane, index in zip(paths, ("axial", "coronal", "sagittal"), (8, 10, 12), strict=True):
        assert Path(path).name == f"t1_{plane}_{index:03d}.png"  # what a downloaded view shows, in its name
        with Image.open(path) as picture:
            assert picture.size == display_size(review.layers, plane)
    old = Path(paths[0]).parent
    os.utime(old, (time.time() - 120, time.time() - 120))
    again = callbacks.render(review, view_inputs())  # same names, another folder; views a minute old are deleted
    assert Path(again[0]).name == Path(paths[0]).name and Path(again[0]).parent != old
    assert not old.exists() and Path(again[0]).is_file()
    review.close()


def test_render_before_any_segmentation_changes_nothing(service):
    skipped = ReviewCallbacks(lambda: service).render(None, view_inputs())
    assert all(isinstance(value, dict) and value.get("__type__") == "update" for value in skipped)


def test_jump_needs_an_uncertainty_map(service, uploaded_volume):
    callbacks = ReviewCallbacks(lambda: service)
    _, _, review = callbacks.segment(str(uploaded_volume), SegmentOptions(uncertainty=False), None, ProgressRecorder())
    with pytest.raises(gr.Error, match="Uncertainty map"):
        callbacks.jump_target(review)
    review.close()


def test_saving_probabilities_does_not_need_the_uncertainty_map(service, uploaded_volume):
    callbacks = ReviewCallbacks(lambda: service)
    options = SegmentOptions(uncertainty=False, save_probabilities=True)
    _, _, review = callbacks.segment(str(uploaded_volume), options, None, ProgressRecorder())
    assert [p.name.split("_")[-1] for p in review.files] == ["mask.nii.gz", "summary.json", "probabilities.nii.gz"]
    review.close()


def test_an_overlay_without_its_data_is_named(service, uploaded_volume):
    from api import panels

    callbacks = ReviewCallbacks(lambda: service)
    _, _, review = callbacks.segment(str(uploaded_volume), SegmentOptions(uncertainty=False), None, ProgressRecorder())
    assert "Errors need a reference mask" in panels.missing_overlay_data(review, "errors")
    assert "No uncertainty map" in panels.missing_overlay_data(review, "uncertainty")
    assert panels.missing_overlay_data(review, "classes") is None
    assert panels.missing_overlay_data(review, "outlines") is None
    placeholder = panels.iou_plot(review)  # the axes and the class legend, no curve
    assert placeholder["IoU"].isna().all() and list(placeholder["class"].unique()) == ["shell", "core"]
    assert placeholder["axial slice"].max() == review.layers.shape[2] - 1
    width, level = panels.auto_window(review)
    assert width > 0 and review.layers.image.min() <= level <= review.layers.image.max()
    review.close()


def test_a_click_on_one_view_moves_the_other_two_there(service, uploaded_volume):
    callbacks = ReviewCallbacks(lambda: service)
    _, _, review = callbacks.segment(str(uploaded_volume), SegmentOptions(), None, ProgressRecorder())
    width, height = display_size(review.layers, "axial")
    axial, coronal, sagittal = callbacks.navigate(review, "axial", [0, height - 1], (8, 10, 12))
    x, y, _ = review.layers.shape
    # Bottom-left of an axial view is the patient's right and back; top-right is left and front.
    assert (axial, coronal, sagittal) == (8, 0, x - 1)
    assert callbacks.navigate(review, "axial", [width - 1, 0], (8, 10, 12)) == (8, y - 1, 0)
    assert callbacks.navigate(review, "axial", None, (8, 10, 12)) == (8, 10, 12)
    review.close()
    with pytest.raises(gr.Error, match="Segment a volume first"):
        callbacks.navigate(None, "axial", [1, 1], (0, 0, 0))


def test_each_view_shows_the_slice_its_own_slider_names(service, uploaded_volume):
    from api.callbacks import style_for
    from api.views import render

    callbacks = ReviewCallbacks(lambda: service)
    _, _, review = callbacks.segment(str(uploaded_volume), SegmentOptions(), None, ProgressRecorder())
    inputs = view_inputs(indices=(3, 9, 14), crosshair=False)  # axial (z), coronal (y), sagittal (x): all different
    style = style_for(review, inputs)
    planes = ("axial", "coronal", "sagittal")
    for path, plane, index in zip(callbacks.render(review, inputs), planes, (3, 9, 14), strict=True):
        with Image.open(path) as picture:
            assert np.array_equal(np.asarray(picture), render(review.layers, plane, index, style)), plane
    review.close()


def test_jump_and_the_first_view_give_slider_indices_in_axial_coronal_sagittal_order(service, uploaded_volume):
    from dataclasses import replace

    from api.callbacks import initial_indices

    callbacks = ReviewCallbacks(lambda: service)
    _, _, review = callbacks.segment(str(uploaded_volume), SegmentOptions(), None, ProgressRecorder())
    entropy = np.zeros(review.layers.shape, np.float16)
    entropy[3, 5, 7] = 1.0  # (x, y, z): sagittal 3, coronal 5, axial 7
    mask = np.zeros(review.layers.shape, np.uint8)
    mask[4, 6, 10] = 1
    moved = replace(review, layers=replace(review.layers, entropy=entropy, mask=mask))
    assert callbacks.jump_target(moved) == (7, 5, 3)
    assert initial_indices(moved) == (10, 6, 4)
    review.close()


def upload_mask(upload_folder: Path, name: str, review, *, shape: tuple[int, ...] | None = None) -> Path:
    """The review's own mask as an uploaded reference (or, given `shape`, a mask on another grid)."""
    import nibabel as nib

    mask = nib.load(review.files[0])
    labels = np.asarray(mask.dataobj) if shape is None else np.zeros(shape, np.uint8)
    path = upload_folder / name / "reference.nii.gz"
    path.parent.mkdir()
    nib.save(nib.Nifti1Image(labels, mask.affine), path)
    return path


def test_a_reference_uploaded_before_its_volume_is_segmented_belongs_to_that_volume(service, uploaded_volume):
    callbacks = ReviewCallbacks(lambda: service)
    assert callbacks.reference_owner(None, None) is None  # no volume yet: the next one segmented
    assert callbacks.reference_owner(None, str(uploaded_volume)) == uploaded_volume
    _, _, review = callbacks.segment(str(uploaded_volume), SegmentOptions(), None, ProgressRecorder())
    assert review.source == uploaded_volume
    assert callbacks.reference_owner(review, None) == uploaded_volume  # box emptied: the review on screen
    other = uploaded_volume.parent.parent / "def456" / "other.nii.gz"
    other.parent.mkdir()
    other.write_bytes(uploaded_volume.read_bytes())
    assert callbacks.reference_owner(review, str(other)) == other  # another volume chosen: it waits for that one
    review.close()


def test_present_compares_a_waiting_reference_of_this_volume_and_drops_one_of_another(
    service, uploaded_volume, upload_folder
):
    from dataclasses import replace

    from api import panels

    callbacks = ReviewCallbacks(lambda: service)
    _, _, review = callbacks.segment(str(uploaded_volume), SegmentOptions(), None, ProgressRecorder())
    reference = str(upload_mask(upload_folder, "ref1", review))
    shown = dict(
        zip(panels.PRESENT_KEYS, panels.present(review, callbacks, 0.4, [], True, reference, None), strict=True)
    )
    assert shown["review"].metrics is not None and shown["overlay"] == "errors"
    assert shown["reference_owner"] == uploaded_volume
    assert shown["reference"] == gr.skip()  # the file stays in its box
    assert shown["agreement"]["Dice"].dropna().eq(1.0).all()  # the mask against itself
    line = panels.cursor_html(shown["review"], 8, 10, 12)
    assert "reference" in line and "agrees" in line and "disagrees" not in line
    layers = shown["review"].layers
    background = replace(shown["review"], layers=replace(layers, reference=np.zeros_like(layers.mask)))
    x, y, z = np.argwhere(layers.mask > 0)[0]  # a voxel the model gave a class: the empty reference disagrees
    assert "disagrees" in panels.cursor_html(background, int(z), int(y), int(x))
    for owner in (uploaded_volume, None):  # belongs to this volume, or to whichever came next
        values = panels.present(review, callbacks, 0.4, [], True, reference, owner)
        assert dict(zip(panels.PRESENT_KEYS, values, strict=True))["review"].metrics is not None

    values = panels.present(review, callbacks, 0.4, [], True, reference, Path("/elsewhere/other.nii.gz"))
    shown = dict(zip(panels.PRESENT_KEYS, values, strict=True))
    assert shown["review"].metrics is None and shown["overlay"] == "classes"
    assert shown["reference"] is None and shown["reference_owner"] is None

    wrong_grid = str(upload_mask(upload_folder, "ref2", review, shape=(5, 5, 5)))
    with pytest.warns(UserWarning, match="grid"):
        values = panels.present(review, callbacks, 0.4, [], True, wrong_grid, None)
    shown = dict(zip(panels.PRESENT_KEYS, values, strict=True))
    assert shown["review"].metrics is None and shown["reference"] is None
    review.close()


def test_the_header_names_the_classes_the_legend_shows(service):
    from api import panels

    header = panels.header_html(service.info())
    assert "shell, core" in header and "background" not in header
    many = [{"index": i, "name": f"organ_{i}"} for i in range(7)]
    assert "6 classes + background" in panels.header_html({"classes": many})


@pytest.mark.parametrize(
    ("low", "high", "step"),
    [(0.003, 230.9, 0.5), (-1024.0, 3071.0, 10.0), (0.0, 1.0, 0.002), (-3.2, 7.7, 0.05), (5.0, 5.0, 0.002)],
)
def test_window_sliders_use_round_steps_and_hold_the_default_window(service, uploaded_volume, low, high, step):
    from dataclasses import replace

    from api import panels

    callbacks = ReviewCallbacks(lambda: service)
    _, _, review = callbacks.segment(str(uploaded_volume), SegmentOptions(), None, ProgressRecorder())
    image = np.linspace(low, high, review.layers.image.size, dtype=np.float32).reshape(review.layers.shape)
    review.close()
    review = replace(review, layers=replace(review.layers, image=image))
    smallest, largest, got_step = panels.window_range(review)
    assert got_step == step
    assert smallest <= low and largest >= high and largest - smallest < high - low + 2 * step + 1.0
    width, level = panels.auto_window(review)
    for value in (width, level, smallest, largest):  # on the step's grid, written with the step's decimals
        assert abs(value / step - round(value / step)) < 1e-6 and len(repr(value)) <= 9, value
    assert step <= width <= largest - smallest and smallest <= level <= largest


def test_the_cursor_readout_names_the_voxel_of_the_uploaded_file(service, upload_folder, nifti):
    import nibabel as nib

    from api import panels
    from api.review import cursor_info

    path = upload_folder / "obl" / "t1.nii.gz"
    path.parent.mkdir()
    blob = nifti.blob()
    path.write_bytes(nifti.encode(blob, nifti.oblique_affine()))  # flipped x and y: canonical order differs
    callbacks = ReviewCallbacks(lambda: service)
    _, _, review = callbacks.segment(str(path), SegmentOptions(), None, ProgressRecorder())
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

    line = panels.cursor_html(review, 9, 17, 3)  # sliders: axial (z), coronal (y), sagittal (x)
    info = cursor_info(review, (3, 17, 9))
    assert f"({info.voxel[0]}, {info.voxel[1]}, {info.voxel[2]})" in line and "mm" in line and "uncertainty" in line
    assert "reference" not in line and panels.CURSOR_HINT in panels.cursor_html(None, 0, 0, 0)
    review.close()


def test_present_keeps_the_chosen_overlay_when_the_new_review_has_its_data(service, uploaded_volume):
    from api import panels

    callbacks = ReviewCallbacks(lambda: service)
    _, _, review = callbacks.segment(str(uploaded_volume), SegmentOptions(uncertainty=False), None, ProgressRecorder())

    def overlay_after(chosen: str) -> str:
        values = panels.present(review, callbacks, 0.4, ["shell"], True, None, None, chosen)
        return dict(zip(panels.PRESENT_KEYS, values, strict=True))["overlay"]

    assert overlay_after("outlines") == "outlines"
    assert overlay_after("classes") == "classes"
    assert overlay_after("uncertainty") == "classes"  # segmented without the uncertainty map
    assert overlay_after("errors") == "classes"  # no reference for this volume
    review.close()
