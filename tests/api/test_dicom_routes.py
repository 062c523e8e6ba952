"""DICOM over HTTP, through a real uvicorn process: POST /v1/predict takes a zipped series or its .dcm files as repeated
`file` parts, `?series=` picks one series, `format=dicom-seg` returns the SEG; /v1/stats measures a SEG on its series;
no answer, log line or metric names the patient, and every request's files are gone afterwards."""

from __future__ import annotations

import io
import re
from pathlib import Path

import httpx
import numpy as np
import pytest
from dicom_series import template, write_series, zip_folder
from hostile_dicom import PHI, datasets, series_zip, two_series

from unet3d.archive import MAX_FILES
from unet3d.dicom import load_dicom, read_dicom_seg
from unet3d.geometry import same_grid

SHAPE = [33, 39, 32]


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("upload") / "series"
    write_series(folder, *template(6), shuffle=4)
    return folder


@pytest.fixture(scope="module")
def archive(series: Path) -> bytes:
    return zip_folder(series, series.parent / "scan.zip", prefix="export/").read_bytes()


def predict(server, files: list | dict, **params: str) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/predict", params=params, files=files, timeout=120)


def decode_seg(payload: bytes, directory: Path):
    path = directory / "answer.dcm"
    path.write_bytes(payload)
    return read_dicom_seg(path)


def decode_mask(payload: bytes, directory: Path) -> np.ndarray:
    import nibabel as nib

    path = directory / "answer.nii.gz"
    path.write_bytes(payload)
    return np.asanyarray(nib.load(path).dataobj)


def test_a_zipped_series_gets_the_summary_the_mask_and_the_seg(tiny_server, series, archive, tmp_path):
    zipped = {"file": ("脑 é.zip", archive, "application/zip")}
    summary = predict(tiny_server, zipped)
    assert summary.status_code == 200, summary.text
    body = summary.json()
    assert body["input_shape"] == SHAPE and body["filename"] == "脑 é.zip"
    assert body["source"]["format"] == "dicom" and body["source"]["modality"] == "MR"
    assert body["source"]["images"] == SHAPE[2] and body["source"]["ignored_series"] == []
    mask = predict(tiny_server, zipped, return_binary="true")
    seg = predict(tiny_server, zipped, return_binary="true", format="dicom-seg")
    assert seg.status_code == 200, seg.text
    assert seg.headers["content-type"] == "application/dicom"
    assert seg.headers["content-disposition"] == (
        "attachment; filename=\"____seg.dcm\"; filename*=UTF-8''%E8%84%91%20%C3%A9_seg.dcm"
    )
    labels = decode_mask(mask.content, tmp_path)
    back = decode_seg(seg.content, tmp_path)
    assert same_grid(back, load_dicom(series))
    np.testing.assert_array_equal(back.data, labels)
    assert tiny_server.temp_files() == []


def test_dcm_files_as_repeated_file_parts_are_one_series(tiny_server, series, archive):
    files = [("file", (path.name, path.read_bytes(), "application/dicom")) for path in sorted(series.iterdir())]
    as_parts = predict(tiny_server, files)
    as_zip = predict(tiny_server, {"file": ("scan.zip", archive, "application/zip")})
    assert as_parts.status_code == 200, as_parts.text
    assert as_parts.json()["filename"] == "T1 MPRAGE"  # several files: the series names itself
    assert as_parts.json()["class_histogram"] == as_zip.json()["class_histogram"]
    seg = predict(tiny_server, files, return_binary="true", format="dicom-seg")
    assert seg.headers["content-disposition"] == (
        "attachment; filename=\"T1_MPRAGE_seg.dcm\"; filename*=UTF-8''T1%20MPRAGE_seg.dcm"
    )
    assert tiny_server.temp_files() == []


@pytest.mark.parametrize(
    ("parts", "params", "status", "fragment"),
    [
        ("nifti", {"return_binary": "true", "format": "dicom-seg"}, 415, "ask for format=nifti (the default)"),
        ("zip", {"format": "dicom-seg"}, 422, "chooses the file returned with return_binary=true"),
        ("zip", {"return_binary": "true", "format": "dicom"}, 422, "format"),
        ("nifti", {"series": "1.2.3"}, 422, "leave the series out"),
        ("one-slice", {}, 422, "single DICOM image, one slice of a series: send the whole series"),
        ("nifti-and-dcm", {}, 422, "send exactly one 'file' part per request (or several DICOM files of one series)"),
        ("too-many-files", {}, 413, f"more than {MAX_FILES} files: send only the series to segment, as one .zip"),
    ],
)
def test_dicom_requests_that_cannot_be_answered_say_why(tiny_server, nifti, series, archive, parts, params, status,
                                                        fragment):  # fmt: skip
    one = sorted(series.iterdir())[0]
    forms = {
        "nifti": {"file": ("t1.nii.gz", nifti.encode(nifti.blob()), "x")},
        "zip": {"file": ("scan.zip", archive, "x")},
        "one-slice": {"file": ("IM0001.dcm", one.read_bytes(), "x")},
        "nifti-and-dcm": [("file", ("IM0001.dcm", one.read_bytes(), "x")), ("file", ("t1.nii.gz", b"x", "x"))],
        "too-many-files": [("file", (f"{i}.dcm", b"x", "x")) for i in range(MAX_FILES + 1)],
    }
    response = predict(tiny_server, forms[parts], **params)
    assert response.status_code == status, response.text
    assert fragment in response.json()["detail"]
    assert tiny_server.temp_files() == []


def test_several_series_are_listed_and_series_picks_one(tiny_server, tmp_path):
    study = {"file": ("study.zip", two_series()(), "application/zip")}
    refused = predict(tiny_server, study)
    assert refused.status_code == 422
    detail = refused.json()["detail"]
    assert "2 volumetric series" in detail and "?series=UID" in detail
    uid = re.findall(r"'T2 FLAIR' \(\d+ images, UID ([0-9.]+)\)", detail)[0]
    chosen = predict(tiny_server, study, series=uid)
    assert chosen.status_code == 200, chosen.text
    assert chosen.json()["source"]["series_uid"] == uid
    assert [s["reason"] for s in chosen.json()["source"]["ignored_series"]] == ["not selected"]


def test_stats_measure_a_seg_on_its_zipped_series_as_the_nifti_mask(tiny_server, archive, tmp_path):
    zipped = {"file": ("scan.zip", archive, "application/zip")}
    seg = predict(tiny_server, zipped, return_binary="true", format="dicom-seg").content
    mask = predict(tiny_server, zipped, return_binary="true").content
    image = ("scan.zip", archive, "application/zip")
    measured = [
        httpx.post(f"{tiny_server.url}/v1/stats", files={"mask": (name, payload, "x"), "image": image}, timeout=60)
        for name, payload in (("scan_seg.dcm", seg), ("scan_mask.nii.gz", mask))
    ]
    assert [m.status_code for m in measured] == [200, 200], measured[0].text
    from_seg, from_nifti = (m.json() for m in measured)
    assert (from_seg["mask"], from_seg["image"], from_seg["shape"]) == ("scan_seg.dcm", "scan.zip", SHAPE)
    assert from_seg["classes"] == from_nifti["classes"]
    assert from_seg["classes"][1]["intensity"] is not None
    coarser = ("coarse.zip", series_zip(datasets(shape_step=7)), "x")
    files = {"mask": ("scan_seg.dcm", seg, "x"), "image": coarser}
    other_grid = httpx.post(f"{tiny_server.url}/v1/stats", files=files, timeout=60)
    assert other_grid.status_code == 422 and "not on the same voxel grid" in other_grid.json()["detail"]
    assert tiny_server.temp_files() == []


def test_no_patient_identifier_in_any_answer_log_or_metric(tiny_server, archive):
    answers = [
        predict(tiny_server, {"file": ("scan.zip", archive, "x")}).text,
        predict(tiny_server, {"file": ("study.zip", two_series()(), "x")}).text,
        predict(tiny_server, {"file": ("scan.zip", archive[:4000], "x")}).text,
    ]
    texts = [*answers, tiny_server.logs(), httpx.get(f"{tiny_server.url}/metrics").text]
    assert [value for value in PHI for text in texts if value in text] == []


def test_the_seg_answer_is_a_dicom_file_a_client_can_read(tiny_server, archive):
    import pydicom

    seg = predict(tiny_server, {"file": ("scan.zip", archive, "x")}, return_binary="true", format="dicom-seg")
    dataset = pydicom.dcmread(io.BytesIO(seg.content))
    assert dataset.Modality == "SEG" and dataset.SeriesNumber == 9900
    assert [s.SegmentLabel for s in dataset.SegmentSequence] == ["shell", "core"]
