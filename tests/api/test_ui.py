"""The Gradio UI over HTTP: gradio_client from another process, the named API, the file-access hole closed, and
what the server log says about errors (user errors: no traceback; bugs: a traceback)."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pytest
from helpers import STRICT_KEY

ROOT = Path(__file__).resolve().parents[2]
CLIENT_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from gradio_client import Client, handle_file
    url, volume, downloads, *key = sys.argv[1:]
    client = Client(url, verbose=False, download_files=downloads, auth=("reviewer", key[0]) if key else None)
    api = client.view_api(print_info=False, return_format="dict")
    mask, summary = client.predict(handle_file(volume), api_name="/segment")
    print(json.dumps({"mask": mask, "summary": summary, "endpoints": api["named_endpoints"]}))
    """
)


def call_gradio_api(url: str, endpoint: str, data: list) -> str:
    """A raw Gradio queue call (no gradio_client): returns the event stream text."""
    started = httpx.post(f"{url}/ui/gradio_api/call/{endpoint}", json={"data": data}, timeout=30)
    assert started.status_code == 200, started.text
    event_id = started.json()["event_id"]
    return httpx.get(f"{url}/ui/gradio_api/call/{endpoint}/{event_id}", timeout=120).text


def file_data(path: str) -> dict:
    return {"path": path, "meta": {"_type": "gradio.FileData"}}


def upload(url: str, name: str, content: bytes) -> str:
    """Upload one file through Gradio's upload route; returns its server path for `file_data`."""
    uploaded = httpx.post(f"{url}/ui/gradio_api/upload", files={"files": (name, content)})
    assert uploaded.status_code == 200, uploaded.text
    return uploaded.json()[0]


def run_client(script: str, url: str, run_until_exit, nifti, tmp_path: Path) -> tuple[Path, dict]:
    """Run a gradio_client script in another process on an oblique volume; returns the volume and its JSON answer."""
    volume = tmp_path / "t1.nii.gz"
    volume.write_bytes(nifti.encode(nifti.blob(), nifti.oblique_affine()))
    finished = run_until_exit(
        {}, [sys.executable, "-c", script, f"{url}/ui/", str(volume), str(tmp_path / "downloads")]
    )
    assert finished.returncode == 0, finished.stderr
    return volume, json.loads(finished.stdout.strip().splitlines()[-1])


def test_gradio_client_in_another_process_segments_through_the_segment_endpoint(
    tiny_server, run_until_exit, nifti, tmp_path
):
    volume, answer = run_client(CLIENT_SCRIPT, tiny_server.url, run_until_exit, nifti, tmp_path)
    endpoint = answer["endpoints"]["/segment"]
    assert len(endpoint["parameters"]) == 1
    # What view_api and the "Use via API" page tell a caller: a NIfTI file through handle_file (not Gradio's
    # FileData docstring and a PDF example).
    volume_parameter = endpoint["parameters"][0]
    assert "A NIfTI volume" in volume_parameter["python_type"]["description"]
    assert volume_parameter["example_input"]["url"] == "t1.nii.gz"
    assert [r["component"] for r in endpoint["returns"]] == ["File", "Json"]
    assert list(answer["endpoints"]) == ["/segment", "/segment_with_options", "/segment_dicom", "/review"]
    assert "the mask (.nii.gz" in endpoint["description"] and "state" not in endpoint["description"]
    assert answer["mask"].endswith("t1_mask.nii.gz")
    assert answer["summary"]["filename"] == "t1.nii.gz"
    mask, source = nib.load(answer["mask"]), nib.load(volume)
    assert mask.shape == source.shape
    assert np.allclose(mask.affine, source.affine)
    assert mask.get_data_dtype() == np.uint8


OPTIONS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from gradio_client import Client, handle_file
    url, volume, downloads = sys.argv[1:]
    client = Client(url, verbose=False, download_files=downloads)
    parameters = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/segment_with_options"]
    plain = client.predict(handle_file(volume), api_name="/segment_with_options")
    full = client.predict(handle_file(volume), tta=True, probabilities=True, api_name="/segment_with_options")
    print(json.dumps({"parameters": parameters["parameters"], "plain": plain, "full": full}))
    """
)


def test_segment_with_options_adds_tta_and_the_probabilities_file(tiny_server, run_until_exit, nifti, tmp_path):
    volume, answer = run_client(OPTIONS_SCRIPT, tiny_server.url, run_until_exit, nifti, tmp_path)
    parameters = {p["parameter_name"]: p for p in answer["parameters"]}
    assert list(parameters) == ["volume", "tta", "probabilities"]
    assert parameters["tta"]["parameter_default"] is False and parameters["probabilities"]["parameter_default"] is False
    assert "flips" in parameters["tta"]["python_type"]["description"]  # what view_api() prints beside each one
    assert "None when false" in parameters["probabilities"]["python_type"]["description"]
    plain_mask, plain_summary, no_probabilities = answer["plain"]
    assert no_probabilities is None and plain_summary["filename"] == "t1.nii.gz" and plain_summary["tta"] is False
    assert set(plain_summary["qc"]) == {"score", "warnings"}  # /segment's summary carries the QC verdict too
    mask, summary, probabilities = answer["full"]
    source = nib.load(volume)
    assert nib.load(mask).shape == source.shape and nib.load(plain_mask).shape == source.shape
    probability_map = nib.load(probabilities)
    assert probability_map.shape == (*source.shape, 3) and np.allclose(probability_map.affine, source.affine)
    assert np.allclose(np.asarray(probability_map.dataobj).sum(axis=-1), 1.0, atol=1e-3)
    assert summary["tta"] is True


@pytest.mark.parametrize("server_path", ["/etc/passwd", "api/examples/mni152_t1.nii.gz"])
def test_raw_api_call_naming_a_server_file_is_refused_with_a_message(tiny_server, server_path):
    # Regression: mounted Gradio 6.31 apps skip the "was it uploaded?" check unless has_launched is set.
    logged_before = len(tiny_server.logs())
    stream = call_gradio_api(tiny_server.url, "segment", [file_data(server_path)])
    assert "event: error" in stream
    assert "event: complete" not in stream
    assert "root:" not in stream
    # Gradio's own check refuses it (api.ui.errors.ReviewBlocks words the answer): one log line, no traceback.
    assert '"error": "Only files uploaded through this page are accepted' in stream
    log = tiny_server.logs()[logged_before:]
    assert f"Cannot move {(ROOT / server_path).resolve()} to the gradio cache dir" in log
    assert "Traceback" not in log


def test_raw_api_call_with_an_uploaded_file_works(tiny_server, nifti):
    path = upload(tiny_server.url, "scan.nii.gz", nifti.encode(nifti.blob()))
    stream = call_gradio_api(tiny_server.url, "segment", [file_data(path)])
    assert "event: complete" in stream
    assert "scan_mask.nii.gz" in stream


def test_a_bad_upload_gets_its_reason_and_leaves_no_traceback_in_the_log(tiny_server):
    logged_before = len(tiny_server.logs())
    path = upload(tiny_server.url, "notes.nii.gz", b"not a volume\n")
    stream = call_gradio_api(tiny_server.url, "segment", [file_data(path)])
    assert "event: error" in stream
    assert "not gzip-compressed: is it really NIfTI?" in stream
    assert "Traceback" not in tiny_server.logs()[logged_before:]


def test_an_internal_error_in_the_ui_is_logged_with_its_traceback_and_not_shown(launch_server, tiny_model_dir, nifti):
    server = launch_server({"UNET3D_MODEL": str(tiny_model_dir)}, name="broken-tmp-server")
    try:
        path = upload(server.url, "t1.nii.gz", nifti.encode(nifti.blob()))
        # A first segmentation makes the server settle on its TMPDIR (Python's tempfile picks it once, lazily).
        assert "event: complete" in call_gradio_api(server.url, "segment", [file_data(path)])
        # Then that TMPDIR becomes a file: the review's work folder cannot be created. Not the user's doing: a bug or
        # a broken host, which the log must explain and the answer must not.
        workdir = server.tmp / "tmp"
        shutil.rmtree(workdir)
        workdir.write_text("")
        stream = call_gradio_api(server.url, "segment", [file_data(path)])
    finally:
        server.stop()
    assert "event: error" in stream
    assert 'data: {"error": null}' in stream
    log = server.logs()
    assert "Traceback (most recent call last)" in log
    assert "NotADirectoryError" in log


def test_with_an_api_key_the_ui_asks_for_it_and_every_gradio_route_needs_the_login(strict_server, nifti):
    url, volume = strict_server.url, nifti.encode(nifti.blob())
    page = httpx.get(f"{url}/ui/").text
    assert '"auth_required":true' in page and "any user name, the key as password" in page
    refused = [
        httpx.get(f"{url}/ui/config"),
        httpx.get(f"{url}/ui/gradio_api/info"),
        httpx.post(f"{url}/ui/gradio_api/upload", files={"files": ("t1.nii.gz", volume)}),
        httpx.post(f"{url}/ui/gradio_api/call/segment", json={"data": [None]}),
        httpx.get(f"{url}/ui/gradio_api/file=api/examples/mni152_t1.nii.gz"),
    ]
    assert [answer.status_code for answer in refused] == [401] * len(refused)
    for wrong in ("s3cret-ke", "S3CRET-KEY", ""):
        assert httpx.post(f"{url}/ui/login", data={"username": "reviewer", "password": wrong}).status_code in (400, 422)
    with httpx.Client(base_url=url) as client:
        login = client.post("/ui/login", data={"username": "reviewer", "password": STRICT_KEY})
        assert login.json() == {"success": True}
        assert client.get("/ui/config").json()["max_file_size"] == 0.25 * 2**20
        uploaded = client.post("/ui/gradio_api/upload", files={"files": ("t1.nii.gz", volume)})
        assert uploaded.status_code == 200, uploaded.text
        too_big = client.post("/ui/gradio_api/upload", files={"files": ("big.nii.gz", b"\x1f\x8b" + b"\x00" * 400_000)})
        assert too_big.status_code == 413


def test_gradio_client_logs_in_with_the_api_key(strict_server, run_until_exit, nifti, tmp_path):
    volume = tmp_path / "t1.nii.gz"
    volume.write_bytes(nifti.encode(nifti.blob()))
    argv = [sys.executable, "-c", CLIENT_SCRIPT, f"{strict_server.url}/ui/", str(volume), str(tmp_path / "dl")]
    without = run_until_exit({}, argv)
    assert without.returncode != 0 and "credentials were not provided" in without.stderr
    finished = run_until_exit({}, [*argv, STRICT_KEY])
    assert finished.returncode == 0, finished.stderr
    answer = json.loads(finished.stdout.strip().splitlines()[-1])
    assert answer["summary"]["filename"] == "t1.nii.gz"
    assert nib.load(answer["mask"]).shape == nib.load(volume).shape


def test_ui_page_is_served_with_analytics_and_run_history_off(tiny_server):
    page = httpx.get(f"{tiny_server.url}/ui", follow_redirects=True)
    assert page.status_code == 200
    assert "unet3d · segmentation review" in page.text
    config = httpx.get(f"{tiny_server.url}/ui/config").json()
    assert config["analytics_enabled"] is False
    assert config.get("run_history") is False
    assert config["footer_links"] == ["api"]


def test_a_plain_path_instead_of_handle_file_says_how_to_send_the_file(tiny_server):
    logged_before = len(tiny_server.logs())
    stream = call_gradio_api(tiny_server.url, "segment", ["/home/me/t1.nii.gz"])  # gradio_client without handle_file
    assert "event: error" in stream
    assert "send the file with gradio_client's handle_file(path)" in stream
    assert "Traceback" not in tiny_server.logs()[logged_before:]


def test_a_file_of_another_type_is_refused_without_a_traceback(tiny_server):
    logged_before = len(tiny_server.logs())
    path = upload(tiny_server.url, "notes.txt", b"some notes\n")
    stream = call_gradio_api(tiny_server.url, "segment", [file_data(path)])
    assert "event: error" in stream and "Invalid file type" in stream
    assert "Traceback" not in tiny_server.logs()[logged_before:]


def test_building_the_ui_writes_nothing_into_the_source_tree():
    # Gradio's component metaclass writes a .pyi stub beside any module that subclasses a component.
    from api.ui import build_ui

    build_ui(lambda: None)
    packages = ("api", "unet3d", "train", "space", "bench")
    assert [stub for package in packages for stub in (ROOT / package).glob("**/*.pyi")] == []
