"""The bad-input corpora (tests/hostile_corpus.py, tests/hostile_dicom.py) against a real uvicorn process: POST
/v1/predict, /v1/stats, the UI.

Every case must get the status DESIGN.md prescribes (or a 200 with the right mask where the NIfTI standard defines
the result), a `detail` that says what is wrong without internals, and leave the server healthy, with no temp file
behind and its memory back near the baseline.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pytest
from hostile_corpus import (
    CAPS,
    CORPUS,
    MULTIPART_HEADERS,
    SHAPE,
    UI_CASES,
    Case,
    gzip_with_trailing_zeros,
    leaks,
    multipart,
    nifti,
)
from hostile_dicom import PHI, DicomCase, dicom_corpus

from unet3d.dicom import read_dicom_seg

SAFE_DISPOSITION = re.compile(
    r'attachment; filename="[A-Za-z0-9_-][A-Za-z0-9._-]*_mask\.nii\.gz"'
    r"(; filename\*=UTF-8''[A-Za-z0-9%._~-]+_mask\.nii\.gz)?"
)
# Room for allocator noise, lazily built caches and Gradio's queue bookkeeping after ~150 requests.
RSS_MARGIN_MIB = 48
# The trailing-data bomb inflates to 512 MiB; refusing it while streaming keeps the peak near one chunk.
BOMB_PEAK_MIB = 64


@pytest.fixture(scope="module")
def server(launch_server, tiny_model_dir: Path) -> Iterator:
    """The tiny model behind tight caps (1 MiB uploads, 4 MiB inflated, 10^6 voxels), TMPDIR owned by the test."""
    running = launch_server({"UNET3D_MODEL": str(tiny_model_dir), **CAPS}, name="hostile-server")
    yield running
    running.stop()


def send(server, case: Case, **params: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/predict",
        params={**params, **case.params},
        content=case.body(),
        headers=case.headers(),
        timeout=60,
    )


def predict_mask(server, payload: bytes, directory: Path) -> nib.Nifti1Image:
    response = httpx.post(
        f"{server.url}/v1/predict",
        params={"return_binary": "true"},
        content=multipart([(b"file", b"reference.nii.gz", payload)]),
        headers=MULTIPART_HEADERS,
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return decode(response.content, directory / "reference_mask.nii.gz")


def decode(payload: bytes, path: Path) -> nib.Nifti1Image:
    path.write_bytes(payload)
    return nib.load(path)


def assert_still_healthy(server) -> None:
    assert server.process.poll() is None, server.logs()
    assert httpx.get(f"{server.url}/health", timeout=5).json()["model_loaded"] is True
    assert server.temp_files() == []


@pytest.mark.parametrize("case", CORPUS, ids=lambda case: case.id)
def test_predict_answers_hostile_input_with_the_design_status(server, case: Case, tmp_path: Path) -> None:
    response = send(server, case, return_binary="true")
    assert response.status_code == case.status, response.text
    if case.status == 200:
        assert SAFE_DISPOSITION.fullmatch(response.headers["content-disposition"])
        mask = decode(response.content, tmp_path / "mask.nii.gz")
        assert case.reference is not None
        expected = predict_mask(server, case.reference(), tmp_path)
        assert np.array_equal(np.asanyarray(mask.dataobj).reshape(SHAPE), np.asanyarray(expected.dataobj))
        source = decode(case.form()[0][2], tmp_path / "source.nii.gz")
        assert_same_geometry(mask, source)
    else:
        assert response.headers["content-type"] == "application/json"
        detail = response.json()["detail"]
        assert isinstance(detail, str) and case.fragment in detail
        assert leaks(detail) == [], detail
    assert_still_healthy(server)


@pytest.mark.parametrize("case", [c for c in CORPUS if c.content is not None], ids=lambda case: case.id)
def test_stats_answer_every_hostile_file_sent_as_a_mask_without_a_server_error(server, case: Case) -> None:
    """The same files as `mask` (and as `image` beside a good mask): a file-level problem gets the status it gets
    from /v1/predict; a readable volume is measured or refused as no label mask; never a 500 or an internal."""
    assert case.content is not None
    content = case.content()
    good = nifti(np.zeros(SHAPE, np.uint8))
    as_mask = [(b"mask", case.filename, content)]
    as_image = [(b"mask", b"mask.nii.gz", good), (b"image", case.filename, content)]
    for form in (as_mask, as_image):
        body = multipart(form)
        response = httpx.post(f"{server.url}/v1/stats", content=body, headers=MULTIPART_HEADERS, timeout=60)
        if case.status in (400, 413, 415):
            assert response.status_code == case.status, response.text
        else:
            assert response.status_code in (200, 422), response.text
        if response.status_code != 200:
            assert leaks(response.json()["detail"]) == [], response.text
    assert_still_healthy(server)


def assert_same_geometry(mask: nib.Nifti1Image, source: nib.Nifti1Image) -> None:
    """Shape, both transforms with their codes, and the NIfTI version are the input's."""
    assert mask.shape == source.shape
    assert type(mask.header) is type(source.header)
    assert mask.get_data_dtype() == np.uint8
    for kind in ("qform", "sform"):
        matrix, code = getattr(source, f"get_{kind}")(coded=True)
        mask_matrix, mask_code = getattr(mask, f"get_{kind}")(coded=True)
        assert mask_code == code
        if code:
            np.testing.assert_allclose(mask_matrix, matrix, atol=1e-5)


def test_inconsistent_qform_and_sform_both_survive_in_the_mask(server, tmp_path: Path) -> None:
    [case] = [c for c in CORPUS if c.id == "inconsistent-qform-sform"]
    mask = decode(send(server, case, return_binary="true").content, tmp_path / "mask.nii.gz")
    qform, qcode = mask.get_qform(coded=True)
    sform, scode = mask.get_sform(coded=True)
    assert (int(qcode), int(scode)) == (1, 2)
    assert not np.allclose(qform, sform)  # the disagreement is kept, not "fixed"


def test_client_file_names_never_become_paths(server) -> None:
    for case in [c for c in CORPUS if c.id.startswith("filename-")]:
        send(server, case)
    assert not Path("/etc/cron.d/evil.nii.gz").exists()
    assert not Path("/etc/passwd.nii.gz").exists()
    assert server.temp_files() == []


def test_gzip_bomb_is_refused_while_inflating_without_the_memory_it_claims(server) -> None:
    bomb = gzip_with_trailing_zeros()
    assert len(bomb) < 2**20  # well under the 1 MiB upload cap, 512 MiB once inflated
    server.reset_peak_memory()
    before = server.memory_kib()
    response = httpx.post(f"{server.url}/v1/predict", files={"file": ("bomb.nii.gz", bomb)}, timeout=60)
    assert response.status_code == 413
    assert "inflates to more than the limit of 4.0 MiB" in response.json()["detail"]
    assert (server.memory_kib("VmHWM") - before) / 1024 < BOMB_PEAK_MIB


@pytest.mark.slow
def test_memory_returns_to_the_baseline_after_the_whole_corpus(server) -> None:
    payload = nifti()
    for _ in range(3):  # warm-up: allocator arenas, lazily built caches
        httpx.post(f"{server.url}/v1/predict", files={"file": ("warm.nii.gz", payload)}, timeout=60)
    baseline = server.memory_kib()
    for _ in range(2):
        for case in CORPUS:
            send(server, case)
    grown_mib = (server.memory_kib() - baseline) / 1024
    assert grown_mib < RSS_MARGIN_MIB, f"RSS grew by {grown_mib:.1f} MiB over the corpus"
    assert "unet3d_queue_depth 0.0" in httpx.get(f"{server.url}/metrics").text
    assert_still_healthy(server)


def dicom_answer(case: DicomCase) -> tuple[int, str]:
    """The status and message fragment under this server's caps (CAPS: 4 MiB inflated, 10^6 voxels): the corpus' voxel
    case is capped tighter (its answer under these caps is a mask), and the byte cap meets the ratio bomb first."""
    if "max_voxels" in case.limits:
        return 200, "(33, 39, 32)"
    if case.id == "zip-bomb-ratio":
        return 413, "more than the limit of 4.0 MiB"
    return case.status, case.fragment


def dicom_detail_leaks(detail: str) -> list[str]:
    """Internals in a detail; the zip's own entry name, quoted back to its sender, is none of the server's."""
    return leaks(detail.replace("'/tmp/evil/IM9999'", "<entry>")) + [value for value in PHI if value in detail]


@pytest.mark.parametrize("case", dicom_corpus(), ids=lambda case: case.id)
def test_predict_answers_the_hostile_dicom_corpus_and_writes_nothing_outside_the_request(
    server, case: DicomCase, tmp_path: Path
) -> None:
    status, fragment = dicom_answer(case)
    files = {"file": ("export.zip", case.content(), "application/zip")}
    response = httpx.post(f"{server.url}/v1/predict", params={"return_binary": "true", "format": "dicom-seg"},
                          files=files, timeout=60)  # fmt: skip
    assert response.status_code == status, response.text
    if status == 200:
        assert response.headers["content-type"] == "application/dicom"
        (tmp_path / "seg.dcm").write_bytes(response.content)
        assert str(read_dicom_seg(tmp_path / "seg.dcm").shape) == fragment
    else:
        detail = response.json()["detail"]
        assert fragment in detail and dicom_detail_leaks(detail) == [], detail
    assert not Path("/tmp/evil").exists()  # the zip-slip entries' targets
    assert_still_healthy(server)


@pytest.mark.parametrize("case", dicom_corpus(), ids=lambda case: case.id)
def test_stats_answer_the_hostile_dicom_corpus_as_image_and_as_mask(server, case: DicomCase) -> None:
    """As `image` beside a good mask, a file-level problem gets the status /v1/predict gives, anything else a 422
    (another grid; several series); as `mask` a zip is a series, never a label mask: never a 500 or an internal."""
    status, _ = dicom_answer(case)
    content = case.content()
    good = nifti(np.zeros(SHAPE, np.uint8))
    as_image = {"mask": ("mask.nii.gz", good, "x"), "image": ("export.zip", content, "application/zip")}
    as_mask = {"mask": ("export.zip", content, "application/zip")}
    for files in (as_image, as_mask):
        response = httpx.post(f"{server.url}/v1/stats", files=files, timeout=60)
        if status in (400, 413, 415):
            assert response.status_code == status, response.text
        else:
            assert response.status_code == 422, response.text
        assert dicom_detail_leaks(response.json()["detail"]) == [], response.text
    assert_still_healthy(server)


@pytest.fixture(scope="module")
def ui_client(server, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    from gradio_client import Client

    downloads = tmp_path_factory.mktemp("ui-downloads")
    client = Client(f"{server.url}/ui/", verbose=False, download_files=str(downloads))
    yield client
    client.close()  # its heartbeat stream would hold the server's graceful shutdown open


@pytest.mark.parametrize("case", UI_CASES, ids=lambda case: case.id)
def test_ui_segment_endpoint_refuses_hostile_input_with_a_clear_message(
    server, ui_client, case: Case, tmp_path: Path
) -> None:
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    assert case.content is not None
    volume = tmp_path / case.filename.decode()
    volume.write_bytes(case.content())
    with pytest.raises(AppError) as refused:
        ui_client.predict(handle_file(str(volume)), api_name="/segment")
    message = str(refused.value)
    # the UI writes its messages as sentences: a fragment that opens the message starts with a capital there
    assert case.fragment in message or case.fragment[:1].upper() + case.fragment[1:] in message, message
    assert leaks(message) == [], message
    assert_still_healthy(server)


UI_DICOM_CASES = ("zip-slip-parent", "two-patients", "bogus-transfer-syntax", "two-volumetric-series")


@pytest.mark.parametrize("case", [c for c in dicom_corpus() if c.id in UI_DICOM_CASES], ids=lambda case: case.id)
def test_ui_segment_endpoint_refuses_hostile_dicom_with_a_clear_message(
    server, ui_client, case: DicomCase, tmp_path: Path
) -> None:
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    upload = tmp_path / "export.zip"
    upload.write_bytes(case.content())
    with pytest.raises(AppError) as refused:
        ui_client.predict(handle_file(str(upload)), api_name="/segment")
    message = str(refused.value)
    assert case.fragment in message or case.fragment[:1].upper() + case.fragment[1:] in message, message
    assert dicom_detail_leaks(message) == [], message
    assert_still_healthy(server)
