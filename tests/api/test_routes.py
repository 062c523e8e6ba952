"""The HTTP API of DESIGN.md against the app in a real uvicorn process: every endpoint and every listed status."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

DESIGN_FIELDS = {
    "filename", "input_shape", "padded_shape", "spacing_mm", "runtime_ms", "device", "threshold_used",
    "class_histogram", "classes", "model", "timings_ms", "source", "qc",
}  # fmt: skip


def upload(payload: bytes, name: str = "blob.nii.gz") -> dict:
    return {"file": (name, payload, "application/octet-stream")}


def test_health_reports_the_loaded_model(tiny_server, tiny_model_dir):
    answer = httpx.get(f"{tiny_server.url}/health").json()
    assert answer == {
        "status": "ok",
        "model_loaded": True,
        "device": "cpu",
        "model": {"id": str(tiny_model_dir), "revision": "local"},
    }
    # ... and so does the server's log, beside uvicorn's own lines
    assert f"INFO:     model {tiny_model_dir}@local loaded on cpu" in tiny_server.logs()


def test_bare_host_redirects_to_the_review_ui(tiny_server):
    answer = httpx.get(f"{tiny_server.url}/", follow_redirects=False)
    assert answer.status_code == 307 and answer.headers["location"] == "/ui/"
    assert httpx.get(f"{tiny_server.url}/", follow_redirects=True).status_code == 200


def test_model_endpoint_returns_card_and_weights_identity(tiny_server):
    card = httpx.get(f"{tiny_server.url}/v1/model").json()
    assert card["name"] == "tiny-test"
    assert [c["name"] for c in card["classes"]] == ["background", "shell", "core"]
    assert card["classes"][1] == {"index": 1, "name": "shell", "color": "#ff0000"}
    assert card["revision"] == "local"
    assert len(card["sha256"]) == 64


def test_predict_returns_the_design_json_fields(tiny_server, nifti):
    volume = nifti.blob()
    with tiny_server.client() as client:
        response = client.post("/v1/predict", files=upload(nifti.encode(volume), "t1.nii.gz"))
    assert response.status_code == 200, response.text
    summary = response.json()
    assert set(summary) >= DESIGN_FIELDS
    assert summary["filename"] == "t1.nii.gz"
    assert summary["input_shape"] == [24, 20, 16]
    assert summary["threshold_used"] is None
    assert set(summary["timings_ms"]) == {"load", "preprocess", "infer", "postprocess", "encode"}
    assert [c["name"] for c in summary["classes"]] == ["background", "shell", "core"]
    assert sum(c["voxels"] for c in summary["classes"]) == volume.size
    assert summary["class_histogram"] == {str(c["index"]): c["voxels"] for c in summary["classes"]}
    assert sum(c["volume_ml"] for c in summary["classes"]) == pytest.approx(volume.size / 1000.0)
    assert set(summary["qc"]) == {"score", "warnings"} and 0 <= summary["qc"]["score"] <= 1
    assert (summary["qc"]["score"] < 0.5) == bool(summary["qc"]["warnings"])


def test_predict_binary_returns_mask_with_the_input_geometry(tiny_server, nifti, tmp_path):
    affine = nifti.oblique_affine()
    payload = nifti.encode(nifti.blob((24, 20, 16, 1)), affine, qform_code=1, sform_code=4)
    with tiny_server.client() as client:
        response = client.post(
            "/v1/predict", params={"return_binary": "true"}, files=upload(payload, "my scan (1).nii.gz")
        )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/gzip"
    assert response.headers["content-disposition"] == (
        "attachment; filename=\"my_scan__1__mask.nii.gz\"; filename*=UTF-8''my%20scan%20%281%29_mask.nii.gz"
    )
    assert response.content[:2] == b"\x1f\x8b"
    source = nifti.decode(payload, tmp_path, "source.nii.gz")
    mask = nifti.decode(response.content, tmp_path, "mask.nii.gz")
    assert mask.shape == source.shape == (24, 20, 16, 1)
    assert mask.get_data_dtype() == np.uint8
    assert np.allclose(mask.get_qform(), source.get_qform())
    assert np.allclose(mask.get_sform(), source.get_sform())
    assert int(mask.header["qform_code"]) == 1
    assert int(mask.header["sform_code"]) == 4
    assert set(np.unique(np.asanyarray(mask.dataobj))) <= {0, 1, 2}


def test_predict_accepts_uncompressed_nii_and_returns_gzip(tiny_server, nifti):
    with tiny_server.client() as client:
        response = client.post(
            "/v1/predict", params={"return_binary": True}, files=upload(nifti.encode(nifti.blob(), gz=False), "a.nii")
        )
    assert response.status_code == 200
    assert response.headers["content-disposition"] == 'attachment; filename="a_mask.nii.gz"'


def test_a_unicode_name_comes_back_exactly_and_a_name_without_suffix_is_judged_by_content(tiny_server, nifti):
    with tiny_server.client() as client:
        named = client.post(
            "/v1/predict", params={"return_binary": True}, files=upload(nifti.encode(nifti.blob()), "脑 é.nii.gz")
        )
        # a bytes upload gets a name without suffix: "upload" from httpx, "file" (the field) from requests
        gzipped = client.post("/v1/predict", files={"file": nifti.encode(nifti.blob())})
        plain = client.post("/v1/predict", files={"file": nifti.encode(nifti.blob(), gz=False)})
        text = client.post("/v1/predict", files={"file": b"not a volume at all" * 40})
    assert named.headers["content-disposition"] == (
        "attachment; filename=\"____mask.nii.gz\"; filename*=UTF-8''%E8%84%91%20%C3%A9_mask.nii.gz"
    )
    assert gzipped.status_code == plain.status_code == 200, (gzipped.text, plain.text)
    assert gzipped.json()["filename"] == "upload" and gzipped.json()["input_shape"] == plain.json()["input_shape"]
    assert text.status_code == 415 and "does not start with a NIfTI header" in text.json()["detail"]


def test_predict_honours_mode_and_tta(tiny_server, nifti):
    with tiny_server.client() as client:
        response = client.post(
            "/v1/predict", params={"mode": "sliding", "tta": True}, files=upload(nifti.encode(nifti.blob((40, 20, 16))))
        )
    assert response.status_code == 200, response.text
    assert response.json()["mode"] == "sliding" and response.json()["tta"] is True


@pytest.mark.parametrize(
    ("payload", "name", "fragment"),
    [
        (b"just some text\n", "notes.txt", "not a NIfTI file"),
        (b"just some text\n", "notes.nii.gz", "not gzip-compressed"),
        (b"\x00" * 400, "raw.nii", "does not start with a NIfTI header"),
    ],
)
def test_predict_returns_415_for_files_that_are_not_nifti(tiny_server, payload, name, fragment):
    response = httpx.post(f"{tiny_server.url}/v1/predict", files=upload(payload, name))
    assert response.status_code == 415
    assert fragment in response.json()["detail"]


def test_predict_returns_400_for_a_truncated_file(tiny_server, nifti):
    payload = nifti.encode(nifti.blob((40, 40, 40)))
    response = httpx.post(f"{tiny_server.url}/v1/predict", files=upload(payload[: len(payload) // 2]))
    assert response.status_code == 400
    assert "truncated" in response.json()["detail"]


def test_predict_returns_400_for_a_corrupt_header(tiny_server, nifti):
    raw = bytearray(nifti.encode(nifti.blob(), gz=False))
    raw[40:56] = b"\xff" * 16  # dim[] and the data type code: nonsense
    response = httpx.post(f"{tiny_server.url}/v1/predict", files=upload(bytes(raw), "bad.nii"))
    assert response.status_code == 400
    assert "cannot read the NIfTI header" in response.json()["detail"]


def test_predict_returns_400_for_an_upload_that_stops_mid_file(tiny_server):
    body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.nii.gz"\r\n\r\n\x1f\x8b\x08'
    response = httpx.post(
        f"{tiny_server.url}/v1/predict", content=body, headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert response.status_code == 400
    assert "ended in the middle" in response.json()["detail"]


@pytest.mark.parametrize("payload", [b"\x1f\x8b\x08\x00", b"\x1f\x8b" + b"\x00" * 300])
def test_error_details_never_reveal_server_paths(tiny_server, payload):
    response = httpx.post(f"{tiny_server.url}/v1/predict", files=upload(payload, ".nii.gz"))
    assert response.status_code == 400
    assert "/tmp" not in response.text
    assert "unet3d-request" not in response.text


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (np.zeros((24, 20, 2), np.float32), "too small"),
        (np.zeros((24, 20, 16, 3), np.float32), "expected a 3D volume"),
        (np.zeros((24, 20, 16), np.complex64), "unsupported voxel type"),
    ],
)
def test_predict_returns_422_for_volumes_it_cannot_segment(tiny_server, nifti, data, fragment):
    response = httpx.post(f"{tiny_server.url}/v1/predict", files=upload(nifti.encode(data)))
    assert response.status_code == 422
    assert fragment in response.json()["detail"]


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"mode": "fastest"}, "mode"),
        ({"threshold": "1.5"}, "threshold"),
        ({"tta": "maybe"}, "tta"),
        ({"threshold": "0.5"}, "threshold applies to binary models only; this model has 3 classes"),
    ],
)
def test_predict_returns_422_with_a_string_detail_for_bad_parameters(tiny_server, nifti, params, fragment):
    response = httpx.post(f"{tiny_server.url}/v1/predict", params=params, files=upload(nifti.encode(nifti.blob())))
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    assert fragment in detail


def test_predict_returns_422_without_a_file_field(tiny_server, nifti):
    with_other_field = httpx.post(f"{tiny_server.url}/v1/predict", files={"volume": ("a.nii.gz", b"x")})
    not_multipart = httpx.post(
        f"{tiny_server.url}/v1/predict", content=b"{}", headers={"content-type": "application/json"}
    )
    assert with_other_field.status_code == not_multipart.status_code == 422
    assert "'file'" in with_other_field.json()["detail"]


def test_predict_returns_413_for_too_many_bytes(strict_server, nifti):
    payload = nifti.encode(np.random.default_rng(0).normal(size=(48, 48, 48)).astype(np.float32))
    assert len(payload) > 0.25 * 2**20
    response = httpx.post(f"{strict_server.url}/v1/predict", headers={"X-API-Key": "s3cret-key"}, files=upload(payload))
    assert response.status_code == 413
    assert "UNET3D_MAX_UPLOAD_MB" in response.json()["detail"]


def test_predict_answers_413_before_a_chunked_upload_has_finished(strict_server):
    host, port = strict_server.url.removeprefix("http://").split(":")
    head = (
        b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nX-API-Key: s3cret-key\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n\r\n"
    )
    part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.nii.gz"\r\n\r\n\x1f\x8b'
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head + _chunk(part))
        for _ in range(16):  # 1 MiB of a body that never ends, well past the 0.25 MiB cap
            sock.sendall(_chunk(b"\x00" * 65536))
        reply = _read_response(sock)
    assert reply.startswith("HTTP/1.1 413")
    assert "UNET3D_MAX_UPLOAD_MB" in reply


def _read_response(sock: socket.socket) -> str:
    data = b""
    while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _content_length(data):
        piece = sock.recv(4096)
        if not piece:
            break
        data += piece
    return data.decode("latin-1")


def _content_length(data: bytes) -> int:
    for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def test_predict_returns_413_for_too_many_voxels_from_the_header(strict_server, nifti):
    payload = nifti.encode(np.zeros((40, 40, 40), np.uint8))  # 64 000 voxels > 40 000, a few hundred bytes
    response = httpx.post(f"{strict_server.url}/v1/predict", headers={"X-API-Key": "s3cret-key"}, files=upload(payload))
    assert response.status_code == 413
    assert "voxels" in response.json()["detail"]


def test_predict_returns_413_for_too_many_decompressed_bytes(strict_server, nifti):
    payload = nifti.encode(np.zeros((30, 30, 30), np.float64))  # 27 000 voxels, 216 kB > 0.1 MiB once inflated
    response = httpx.post(f"{strict_server.url}/v1/predict", headers={"X-API-Key": "s3cret-key"}, files=upload(payload))
    assert response.status_code == 413
    assert "uncompressed" in response.json()["detail"]


@pytest.mark.parametrize(
    "headers", [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-key"}]
)
def test_v1_routes_return_401_without_the_right_key(strict_server, nifti, headers):
    model = httpx.get(f"{strict_server.url}/v1/model", headers=headers)
    predict = httpx.post(f"{strict_server.url}/v1/predict", headers=headers, files=upload(nifti.encode(nifti.blob())))
    assert model.status_code == predict.status_code == 401
    assert "API key" in model.json()["detail"]


@pytest.mark.parametrize("headers", [{"X-API-Key": "s3cret-key"}, {"Authorization": "Bearer s3cret-key"}])
def test_v1_routes_accept_the_key_in_either_header(strict_server, nifti, headers):
    assert httpx.get(f"{strict_server.url}/v1/model", headers=headers).status_code == 200
    predict = httpx.post(f"{strict_server.url}/v1/predict", headers=headers, files=upload(nifti.encode(nifti.blob())))
    assert predict.status_code == 200, predict.text


def test_health_and_metrics_need_no_key(strict_server):
    assert httpx.get(f"{strict_server.url}/health").status_code == 200
    assert httpx.get(f"{strict_server.url}/metrics").status_code == 200


def test_an_upload_still_arriving_holds_no_inference_slot(strict_server, nifti):
    """One slot and no queue: a client trickling its upload in must not turn another client's request into a 503
    (the slot is taken once an upload is complete; tests/api/test_admission.py has the 503 when it really is busy)."""
    payload = nifti.encode(nifti.blob())
    head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="slow.nii.gz"\r\n\r\n'
    holding = threading.Event()
    result: dict[str, httpx.Response] = {}

    def slow_body() -> Iterator[bytes]:
        yield head
        holding.set()
        time.sleep(2.0)  # well under UNET3D_UPLOAD_STALL_S: slow, not stalled
        yield payload + b"\r\n--b--\r\n"

    def send_slow() -> None:
        result["slow"] = httpx.post(
            f"{strict_server.url}/v1/predict",
            content=slow_body(),
            headers={"content-type": "multipart/form-data; boundary=b", "X-API-Key": "s3cret-key"},
            timeout=60,
        )

    worker = threading.Thread(target=send_slow)
    worker.start()
    assert holding.wait(10)
    time.sleep(0.5)
    meanwhile = httpx.post(
        f"{strict_server.url}/v1/predict", headers={"X-API-Key": "s3cret-key"}, files=upload(payload)
    )
    worker.join(30)
    assert meanwhile.status_code == 200, meanwhile.text
    assert result["slow"].status_code == 200, result["slow"].text


def test_health_answers_at_once_while_a_prediction_runs(tiny_server, nifti):
    payload = nifti.encode(nifti.blob((144, 144, 144)))
    started = threading.Event()
    result: dict[str, httpx.Response] = {}

    def predict() -> None:
        started.set()
        result["predict"] = httpx.post(
            f"{tiny_server.url}/v1/predict", params={"tta": True}, files=upload(payload), timeout=120
        )

    worker = threading.Thread(target=predict)
    worker.start()
    started.wait(5)
    latencies, running_seen = [], False
    while worker.is_alive():
        begun = time.perf_counter()
        assert httpx.get(f"{tiny_server.url}/health", timeout=5).status_code == 200
        latencies.append(time.perf_counter() - begun)
        running_seen |= "unet3d_inference_in_progress 1.0" in httpx.get(f"{tiny_server.url}/metrics").text
        time.sleep(0.05)
    worker.join()
    assert result["predict"].status_code == 200
    assert running_seen, "the prediction finished before /health could be probed during inference"
    assert max(latencies) < 1.0


def test_metrics_count_requests_by_route_and_status(tiny_server, nifti):
    httpx.post(f"{tiny_server.url}/v1/predict", files=upload(nifti.encode(nifti.blob())))
    httpx.post(f"{tiny_server.url}/v1/predict", files=upload(b"text", "x.txt"))
    httpx.get(f"{tiny_server.url}/no/such/route")
    for path in ("/openapi.json", "/docs-assets/swagger-ui.css"):  # a plain Starlette route, a static mount
        assert httpx.get(f"{tiny_server.url}{path}").status_code == 200
    text = httpx.get(f"{tiny_server.url}/metrics").text
    assert 'route="/openapi.json",status="200"' in text and 'route="/docs-assets",status="200"' in text
    assert 'unet3d_http_requests_total{method="POST",route="/v1/predict",status="200"}' in text
    assert 'unet3d_http_requests_total{method="POST",route="/v1/predict",status="415"}' in text
    assert 'route="unmatched",status="404"' in text
    assert "/no/such/route" not in text
    assert "unet3d_http_request_duration_seconds_bucket" in text
    assert "unet3d_inference_seconds_count" in text
    assert "unet3d_queue_depth 0.0" in text
    assert 'unet3d_model_info{device="cpu"' in text


def test_temp_files_are_removed_on_every_path(tiny_server, nifti):
    outcomes = [
        httpx.post(f"{tiny_server.url}/v1/predict", files=upload(nifti.encode(nifti.blob()))).status_code,
        httpx.post(
            f"{tiny_server.url}/v1/predict?return_binary=true", files=upload(nifti.encode(nifti.blob()))
        ).status_code,
        httpx.post(f"{tiny_server.url}/v1/predict", files=upload(b"text", "x.nii.gz")).status_code,
        httpx.post(f"{tiny_server.url}/v1/predict", files=upload(nifti.encode(np.zeros((24, 20, 2))))).status_code,
    ]
    assert outcomes == [200, 200, 415, 422]
    leftovers = list((tiny_server.tmp / "tmp").glob("unet3d-request-*"))
    assert leftovers == []


def test_client_filename_is_never_used_as_a_path(tiny_server, nifti):
    name = b"../../../../tmp/evil \xe2\x80\x9cx\xe2\x80\x9d;.nii.gz"
    body = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="' + name + b'"\r\n\r\n'
        + nifti.encode(nifti.blob()) + b"\r\n--b--\r\n"
    )  # fmt: skip
    response = httpx.post(
        f"{tiny_server.url}/v1/predict?return_binary=true",
        content=body,
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-disposition"] == (  # the exact name only percent-encoded, never raw
        "attachment; filename=\"evil__x___mask.nii.gz\"; filename*=UTF-8''evil%20%E2%80%9Cx%E2%80%9D%3B_mask.nii.gz"
    )
    assert not Path("/tmp/evil \u201cx\u201d;.nii.gz").exists()


def test_cors_is_closed_by_default(tiny_server):
    preflight = httpx.options(
        f"{tiny_server.url}/v1/predict",
        headers={"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_allows_only_the_configured_origin(strict_server):
    def preflight(origin: str) -> httpx.Response:
        return httpx.options(
            f"{strict_server.url}/v1/predict",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "x-api-key",
            },
        )

    allowed = preflight("https://review.example.org")
    refused = preflight("https://elsewhere.example")
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://review.example.org"
    assert "access-control-allow-origin" not in refused.headers


def test_openapi_documents_the_contract(tiny_server):
    schema = httpx.get(f"{tiny_server.url}/openapi.json").json()
    predict = schema["paths"]["/v1/predict"]["post"]
    parameters = {p["name"] for p in predict["parameters"]}
    assert parameters == {"return_binary", "threshold", "tta", "mode", "format", "series"}
    body = predict["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["required"] == ["file"]
    assert {"200", "400", "401", "413", "415", "422", "503"} <= set(predict["responses"])
    assert {"application/gzip", "application/dicom"} <= set(predict["responses"]["200"]["content"])
    fields = set(schema["components"]["schemas"]["PredictionSummary"]["properties"])
    assert fields >= DESIGN_FIELDS
    assert {"/health", "/v1/model", "/metrics"} <= set(schema["paths"])
    for page in ("/docs", "/redoc"):
        assert httpx.get(f"{tiny_server.url}{page}").status_code == 200


@pytest.mark.parametrize(
    ("page", "assets"),
    [("/docs", ["swagger-ui-bundle.js", "swagger-ui.css"]), ("/redoc", ["redoc.standalone.js"])],
)
def test_the_docs_pages_load_everything_from_this_server(tiny_server, page, assets):
    answer = httpx.get(f"{tiny_server.url}{page}")
    html = answer.text
    assert "http://" not in html and "https://" not in html  # no CDN, no Google fonts
    assert answer.headers["content-security-policy"].startswith("default-src 'self';")
    for asset in assets:
        assert f'"/docs-assets/{asset}"' in html
        response = httpx.get(f"{tiny_server.url}/docs-assets/{asset}")
        assert response.status_code == 200 and len(response.content) > 100_000
    assert '"/openapi.json"' in html or "'/openapi.json'" in html


def undocumented(node: Any, where: str = "#") -> list[str]:
    """JSON pointers of the schema properties without a description, anywhere in an OpenAPI document."""
    if isinstance(node, list):
        return [found for i, item in enumerate(node) for found in undocumented(item, f"{where}/{i}")]
    if not isinstance(node, dict):
        return []
    properties = node.get("properties")
    found = [
        f"{where}/properties/{name}"
        for name, prop in (properties.items() if isinstance(properties, dict) else ())
        if not prop.get("description")
    ]
    return found + [found for key, value in node.items() for found in undocumented(value, f"{where}/{key}")]


def test_undocumented_finds_nested_and_referencing_properties():
    document = {"a": [{"properties": {"ok": {"description": "x"}, "bare": {"$ref": "#/b"}}}]}
    assert undocumented(document) == ["#/a/0/properties/bare"]


def test_openapi_describes_every_property_and_parameter(tiny_server):
    schema = httpx.get(f"{tiny_server.url}/openapi.json").json()
    assert undocumented(schema) == []
    parameters = [p for path in schema["paths"].values() for op in path.values() for p in op.get("parameters", [])]
    assert parameters and [p["name"] for p in parameters if not p.get("description")] == []
    padded = schema["components"]["schemas"]["PredictionSummary"]["properties"]["padded_shape"]["description"]
    assert "foreground crop" in padded and "[176, 208, 176]" in padded


def test_favicon_is_served(tiny_server):
    response = httpx.get(f"{tiny_server.url}/favicon.ico")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/svg+xml"


def test_stats_measure_the_mask_predict_returned_without_running_the_model(tiny_server, nifti, tmp_path):
    image = nifti.blob()
    payload = nifti.encode(image, nifti.oblique_affine())
    with tiny_server.client() as client:
        summary = client.post("/v1/predict", files=upload(payload, "t1.nii.gz")).json()
        mask = client.post("/v1/predict", params={"return_binary": "true"}, files=upload(payload, "t1.nii.gz")).content
        files = {"mask": ("t1_mask.nii.gz", mask, "application/gzip"), "image": ("t1.nii.gz", payload, "x")}
        response = client.post("/v1/stats", files=files)
    assert response.status_code == 200, response.text
    measured = response.json()
    assert (measured["mask"], measured["image"], measured["shape"]) == ("t1_mask.nii.gz", "t1.nii.gz", [24, 20, 16])
    # the same classes, names, counts and edge flags as the prediction's own summary
    keys = ("index", "name", "voxels", "volume_ml", "touches_border")
    assert [{k: c[k] for k in keys} for c in measured["classes"]] == [
        {k: c[k] for k in keys} for c in summary["classes"]
    ]
    decoded = nifti.decode(mask, tmp_path)
    labels = np.asarray(decoded.dataobj)
    cls = max((1, 2), key=lambda c: int((labels == c).sum()))
    chosen = measured["classes"][cls]
    assert chosen["voxels"] > 0
    assert chosen["intensity"]["mean"] == pytest.approx(float(image[labels == cls].mean()), rel=1e-4)
    centre = np.argwhere(labels == cls).mean(axis=0)
    assert chosen["centroid_mm"] == pytest.approx(
        list(decoded.affine[:3, :3] @ centre + decoded.affine[:3, 3]), abs=1e-3
    )


def _mask_bytes(nifti, shape=(12, 10, 8), highest=2) -> bytes:
    labels = np.zeros(shape, np.int16)
    labels[2:6, 2:6, 2:6] = 1
    labels[6:8, 6:8, 6:8] = highest
    return nifti.encode(labels)


def _part(name: str, payload: bytes) -> tuple[str, bytes, str]:
    return (name, payload, "application/octet-stream")


STATS_REFUSALS = {
    "no-mask": (
        lambda n: {"image": _part("t1.nii.gz", n.encode(n.blob((12, 10, 8))))},
        {},
        422,
        "the form has no 'mask' field: send a field named 'mask' (curl: -F 'mask=@t1_mask.nii.gz')",
    ),
    "image-on-another-grid": (
        lambda n: {
            "mask": _part("m.nii.gz", _mask_bytes(n)),
            "image": _part("t1.nii.gz", n.encode(n.blob((12, 10, 7)))),
        },
        {},
        422,
        "not on the same voxel grid (shape and affine): send as 'image' the volume the mask was made from",
    ),
    "image-sent-as-mask": (
        lambda n: {
            "mask": _part("t1.nii.gz", n.encode(np.random.default_rng(0).integers(0, 255, (16,) * 3, np.uint8)))
        },
        {},
        422,
        "t1.nii.gz looks like an image, not a label mask",
    ),
    "num-classes-too-small": (
        lambda n: {"mask": _part("m.nii.gz", _mask_bytes(n))},
        {"num_classes": 2},
        422,
        "m.nii.gz holds labels up to 2: num_classes must be at least 3",
    ),
    "too-many-classes": (
        lambda n: {"mask": _part("m.nii.gz", _mask_bytes(n, highest=2000))},
        {},
        422,
        "2001 classes (labels 0 .. 2000) are more than the 1024 measured per request",
    ),
    "not-nifti": (lambda n: {"mask": _part("m.txt", b"not a volume")}, {}, 415, "is not a NIfTI file"),
}


@pytest.mark.parametrize(("build", "params", "status", "fragment"), STATS_REFUSALS.values(), ids=STATS_REFUSALS.keys())
def test_stats_refuse_what_cannot_be_measured_saying_why(tiny_server, nifti, build, params, status, fragment):
    with tiny_server.client() as client:
        response = client.post("/v1/stats", files=build(nifti), params=params)
    assert response.status_code == status and fragment in response.json()["detail"], response.text


def test_stats_need_the_api_key_like_every_v1_route(strict_server, nifti):
    files = {"mask": ("m.nii.gz", _mask_bytes(nifti), "x")}
    assert httpx.post(f"{strict_server.url}/v1/stats", files=files).status_code == 401
    answer = httpx.post(f"{strict_server.url}/v1/stats", files=files, headers={"X-API-Key": "s3cret-key"})
    assert answer.status_code == 200 and [c["name"] for c in answer.json()["classes"]] == [
        "background",
        "shell",
        "core",
    ]
