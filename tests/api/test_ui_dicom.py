"""DICOM in the review UI: a zipped series in the volume box or its files in the page's DICOM box segment alike, the
status names DICOM, the series and its modality, the downloads hold the SEG; gradio_client's /segment takes a .zip
(one file, as for NIfTI) and /segment_dicom returns the SEG."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import nibabel as nib
import numpy as np
import pytest
from dicom_series import template, write_series, zip_folder

from api.service import SegmentationService
from api.settings import Settings
from api.ui.events import ReviewEvents
from api.ui.layout import Layout, build_layout
from api.ui.markup import status_markdown
from unet3d.dicom import load_dicom, read_dicom_seg
from unet3d.geometry import same_grid

SHAPE = (33, 39, 32)


class Progress:
    def __call__(self, fraction: float, desc: str = "") -> None:
        pass


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("series") / "T1"
    write_series(folder, *template(6), shuffle=5)
    return folder


@pytest.fixture(scope="module")
def archive(series: Path) -> Path:
    return zip_folder(series, series.parent / "head scan.zip", prefix="DICOM/")


@pytest.fixture
def uploads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Gradio's upload folder (the handlers accept only files from there)."""
    folder = tmp_path / "gradio-uploads"
    folder.mkdir()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(folder))
    return folder


@pytest.fixture(scope="module")
def events(tiny_model_dir: Path) -> ReviewEvents:
    service = SegmentationService.from_settings(Settings(UNET3D_MODEL=str(tiny_model_dir), queue_size=0))
    with gr.Blocks():
        layout: Layout = build_layout()
    return ReviewEvents(lambda: service, layout)


def press_segment(events: ReviewEvents, volume: Path | None, files: list[Path]) -> dict:
    """Choose `volume` or `files` and press Segment, as the page does: store the options, segment, present."""
    ui, session = events.ui, events.ui.session.value
    values = {ui.session: session, ui.uncertainty: False, ui.tta: False, ui.keep_probabilities: False,
              ui.dicom_files: [str(f) for f in files] or None}  # fmt: skip
    events.store_options(values)
    _, summary, session = events.segment(str(volume) if volume else None, session, Progress())
    shown = events.present({ui.session: session, ui.reference: None, ui.overlay: "classes"})
    session.close()
    return {"summary": summary, "status": shown[ui.status], "downloads": shown[ui.downloads]}


def copied(paths: list[Path], folder: Path) -> list[Path]:
    """Each file as Gradio stores an upload: in a folder of its own, under its own name."""
    return [Path(shutil.copy(path, Path(tempfile.mkdtemp(dir=folder)) / path.name)) for path in paths]


def test_a_zip_in_the_volume_box_shows_dicom_and_offers_the_seg(events, archive, uploads):
    [upload] = copied([archive], uploads)
    shown = press_segment(events, upload, [])
    uid = shown["summary"]["source"]["series_uid"]
    assert f"**head scan.zip** (DICOM MR, series {uid}, {SHAPE[2]} images)" in shown["status"]
    names = [Path(p).name for p in shown["downloads"]]
    assert names == ["head_scan_mask.nii.gz", "head_scan_summary.json", "head_scan_seg.dcm"]


def test_the_files_of_a_series_in_the_dicom_box_segment_as_the_zip(events, series, archive, uploads):
    files = copied(sorted(series.iterdir()), uploads)
    from_files = press_segment(events, None, files)
    [upload] = copied([archive], uploads)
    from_zip = press_segment(events, upload, [])
    assert from_files["summary"]["class_histogram"] == from_zip["summary"]["class_histogram"]
    assert "**T1 MPRAGE** (DICOM MR, series" in from_files["status"]  # several files: the series names itself
    seg = next(Path(p) for p in from_files["downloads"] if p.endswith("_seg.dcm"))
    assert seg.name == "T1_MPRAGE_seg.dcm"


def test_a_nifti_review_has_no_seg_and_no_dicom_in_its_status(events, volume_path, uploads):
    [upload] = copied([volume_path], uploads)
    shown = press_segment(events, upload, [])
    assert "DICOM" not in shown["status"]
    assert not [p for p in shown["downloads"] if p.endswith(".dcm")]


def test_the_status_lists_the_series_left_out():
    review = type("R", (), {})()
    review.summary = {
        "filename": "study.zip", "input_shape": [4, 4, 4], "spacing_mm": [1, 1, 1], "orientation": "LPS",
        "runtime_ms": 10, "device": "cpu", "mode": "whole", "classes": [],
        "source": {"format": "dicom", "series_uid": "1.2.3", "modality": "CT", "images": 4,
                   "ignored_series": [{"uid": "9", "description": "Scout", "images": 3, "reason": "localizer"}]},
    }  # fmt: skip
    assert "(DICOM CT, series 1.2.3, 4 images; 1 series left out: localizer)" in status_markdown(review)


@pytest.fixture(scope="module")
def client(tiny_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    from gradio_client import Client

    client = Client(f"{tiny_server.url}/ui/", verbose=False, download_files=str(tmp_path_factory.mktemp("got")))
    yield client
    client.close()


def test_gradio_client_segments_a_zip_through_segment_and_gets_the_seg_from_segment_dicom(client, series, archive):
    from gradio_client import handle_file

    mask, summary = client.predict(handle_file(str(archive)), api_name="/segment")
    assert summary["source"]["format"] == "dicom" and summary["input_shape"] == list(SHAPE)
    volume = load_dicom(series)
    labels = nib.load(mask)
    assert labels.shape == SHAPE and np.allclose(labels.affine, volume.affine)
    seg, mask_again, summary_again = client.predict(handle_file(str(archive)), api_name="/segment_dicom")
    assert Path(seg).name == "head_scan_seg.dcm" and summary_again["class_histogram"] == summary["class_histogram"]
    back = read_dicom_seg(seg)
    assert same_grid(back, volume)
    np.testing.assert_array_equal(back.data, np.asanyarray(nib.load(mask_again).dataobj))


def test_segment_dicom_refuses_a_nifti_volume(client, volume_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="not DICOM, so it has no DICOM SEG"):
        client.predict(handle_file(str(volume_path)), api_name="/segment_dicom")
