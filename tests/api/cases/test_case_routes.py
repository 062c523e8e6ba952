"""/v1/cases over HTTP against a real uvicorn process: cases, verdicts with If-Match, revisions, files, CSV, users."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pytest

from api.cases.users import add_user

SHAPE = (24, 20, 16)


def label_mask(label: int = 1) -> np.ndarray:
    mask = np.zeros(SHAPE, np.uint8)
    mask[6:14, 5:12, 4:10] = label
    return mask


@pytest.fixture(scope="module")
def server(launch_server, tiny_model_dir):
    """One person on a laptop: no users file, no API key."""
    return launch_server({"UNET3D_MODEL": str(tiny_model_dir)}, name="cases-server")


@pytest.fixture(scope="module")
def users_server(launch_server, tiny_model_dir, tmp_path_factory):
    """A users file (ann, bob) and an API key for the rest of /v1."""
    users = tmp_path_factory.mktemp("users") / "users"
    add_user(users, "ann", "ann-pw")
    add_user(users, "bob", "bob-pw")
    settings = {"UNET3D_MODEL": str(tiny_model_dir), "UNET3D_USERS_FILE": str(users), "UNET3D_API_KEY": "k3y"}
    return launch_server(settings, name="cases-users-server")


@pytest.fixture
def client(server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def create(client: httpx.Client, nifti, name: str, *, mask: np.ndarray | None = None, **kwargs) -> httpx.Response:
    files = {"volume": (f"{name}.nii.gz", nifti.encode(nifti.blob(SHAPE)))}
    if mask is not None:
        files["mask"] = (f"{name}_mask.nii.gz", nifti.encode(mask))
    return client.post("/v1/cases", files=files, **kwargs)


def test_a_volume_without_a_mask_is_segmented_into_revision_zero(client, nifti):
    answer = create(client, nifti, "predicted")
    assert answer.status_code == 201, answer.text
    case = answer.json()
    assert answer.headers["location"] == f"/v1/cases/{case['id']}"
    assert answer.headers["etag"] == case["etag"] == f'"{case["id"]}.1"'
    assert (case["status"], case["source"], case["latest_revision"]) == ("unreviewed", "prediction", 0)
    assert case["model"]["id"] and case["revisions"][0]["author"].startswith("model:")
    assert [c["name"] for c in case["class_volumes"]] == ["background", "shell", "core"]
    assert sum(c["voxels"] for c in case["class_volumes"]) == int(np.prod(SHAPE))


def test_a_verdict_needs_the_current_etag(client, nifti):
    case = create(client, nifti, "verdicts", mask=label_mask()).json()
    url, body = f"/v1/cases/{case['id']}/review", {"verdict": "accepted", "score": 4, "note": "ok", "reviewer": "ann"}
    missing = client.put(url, json=body)
    assert missing.status_code == 428 and "If-Match" in missing.json()["detail"]
    assert client.put(url, json=body, headers={"If-Match": "*"}).status_code == 428
    first = client.put(url, json=body, headers={"If-Match": case["etag"]})
    assert first.status_code == 200 and first.json()["status"] == "accepted"
    assert first.headers["etag"] == f'"{case["id"]}.2"'
    stale = client.put(url, json={**body, "verdict": "rejected"}, headers={"If-Match": case["etag"]})
    assert stale.status_code == 412 and "reload" in stale.json()["detail"]
    other_case = client.put(url, json=body, headers={"If-Match": '"999999.2"'})
    assert other_case.status_code == 412
    current = client.get(f"/v1/cases/{case['id']}")
    assert current.headers["etag"] == first.headers["etag"]
    assert [r["verdict"] for r in current.json()["reviews"]] == ["accepted"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"verdict": "accepted"}, "'reviewer' is required"),
        ({"verdict": "maybe", "reviewer": "ann"}, "verdict"),
        ({"verdict": "accepted", "score": 6, "reviewer": "ann"}, "score"),
        ({"verdict": "accepted", "reviewer": "a:b"}, "without ':'"),
    ],
)
def test_invalid_verdicts_are_422_with_the_reason(client, nifti, body, expected):
    case = client.get("/v1/cases", params={"limit": 1}).json()["cases"] or [create(client, nifti, "v422").json()]
    answer = client.put(f"/v1/cases/{case[0]['id']}/review", json=body, headers={"If-Match": f'"{case[0]["id"]}.1"'})
    assert answer.status_code == 422 and expected in answer.json()["detail"]


def test_a_corrected_mask_becomes_the_next_revision_on_the_volume_header(client, nifti, tmp_path):
    case = create(client, nifti, "corrected", mask=label_mask()).json()
    corrected = label_mask()
    corrected[6:8][corrected[6:8] == 1] = 2
    answer = client.post(
        f"/v1/cases/{case['id']}/masks", params={"author": "ann"},
        files={"mask": ("fix.nii.gz", nifti.encode(corrected))}, headers={"If-Match": case["etag"]},
    )  # fmt: skip
    assert answer.status_code == 201, answer.text
    assert answer.headers["location"] == f"/v1/cases/{case['id']}/masks/1"
    revision = answer.json()["revisions"][1]
    assert (revision["parent"], revision["author"]) == (0, "ann")
    assert revision["changed_voxels"] == {"1": {"added": 0, "removed": 84}, "2": {"added": 84, "removed": 0}}
    download = client.get(f"/v1/cases/{case['id']}/masks/1")
    assert download.status_code == 200 and download.headers["content-type"] == "application/gzip"
    mask = nifti.decode(download.content, tmp_path, "m.nii.gz")
    volume = nifti.decode(client.get(f"/v1/cases/{case['id']}/volume").content, tmp_path, "v.nii.gz")
    assert np.array_equal(np.asarray(mask.dataobj), corrected) and mask.get_data_dtype() == np.uint8
    for coded in ("get_qform", "get_sform"):
        assert np.array_equal(getattr(mask.header, coded)(coded=True)[0], getattr(volume.header, coded)(coded=True)[0])
        assert getattr(mask.header, coded)(coded=True)[1] == getattr(volume.header, coded)(coded=True)[1]
    stale = client.post(
        f"/v1/cases/{case['id']}/masks", params={"author": "bob"},
        files={"mask": ("fix.nii.gz", nifti.encode(corrected))}, headers={"If-Match": case["etag"]},
    )  # fmt: skip
    assert stale.status_code == 412


@pytest.mark.parametrize(
    ("mask", "status", "expected"),
    [
        (np.zeros((24, 20, 15), np.uint8), 422, "not on the voxel grid"),
        (label_mask(9), 422, "0 .. 2"),
        (np.full(SHAPE, 0.5, np.float32), 422, "non-integer"),
    ],
)
def test_a_revision_that_is_not_a_mask_of_the_case_is_refused(client, nifti, mask, status, expected):
    case = create(client, nifti, f"refuse-{status}-{expected[:6]}", mask=label_mask()).json()
    answer = client.post(
        f"/v1/cases/{case['id']}/masks", params={"author": "ann"}, files={"mask": ("m.nii.gz", nifti.encode(mask))},
        headers={"If-Match": case["etag"]},
    )  # fmt: skip
    assert answer.status_code == status and expected in answer.json()["detail"]
    assert client.get(f"/v1/cases/{case['id']}").json()["version"] == 1


def test_conflicts_unknown_cases_and_bad_uploads_are_4xx(client, nifti):
    assert create(client, nifti, "twice", mask=label_mask()).status_code == 201
    taken = create(client, nifti, "twice", mask=label_mask())
    assert taken.status_code == 409 and "exists already" in taken.json()["detail"]
    assert create(client, nifti, "renamed", mask=label_mask(), params={"name": "twice-2"}).status_code == 201
    assert client.get("/v1/cases/987654").status_code == 404
    case_id = client.get("/v1/cases", params={"limit": 1}).json()["cases"][0]["id"]
    assert client.get(f"/v1/cases/{case_id}/masks/42").status_code == 404
    text = client.post("/v1/cases", files={"volume": ("notes.txt", b"hello")})
    assert text.status_code == 415
    assert client.post("/v1/cases", files={"mask": ("m.nii.gz", nifti.encode(label_mask()))}).status_code == 422
    off_grid = create(client, nifti, "offgrid", mask=np.zeros((5, 5, 5), np.uint8))
    assert off_grid.status_code == 422 and "not on the voxel grid" in off_grid.json()["detail"]


def test_the_worklist_filters_and_the_csv_exports_latest_and_history(client, nifti):
    case = create(client, nifti, "exported", mask=label_mask()).json()
    url = f"/v1/cases/{case['id']}/review"
    second = client.put(url, json={"verdict": "needs_correction", "note": "=HYPERLINK(1)", "reviewer": "cara"},
                        headers={"If-Match": case["etag"]})  # fmt: skip
    client.put(url, json={"verdict": "rejected", "reviewer": "cara"}, headers={"If-Match": second.headers["etag"]})
    listed = client.get("/v1/cases", params={"reviewer": "cara", "status": "rejected"}).json()
    assert [c["name"] for c in listed["cases"]] == ["exported"]
    latest = list(csv.DictReader(io.StringIO(client.get("/v1/reviews.csv").text)))
    row = next(r for r in latest if r["case"] == "exported")
    assert (row["status"], row["reviewer"], row["shell_ml"]) == ("rejected", "cara", "0.336")
    assert len(latest) == client.get("/v1/cases").json()["total"]
    history = list(csv.DictReader(io.StringIO(client.get("/v1/reviews.csv", params={"history": True}).text)))
    mine = [r for r in history if r["case"] == "exported"]
    assert [(r["verdict"], r["note"]) for r in mine] == [("needs_correction", "'=HYPERLINK(1)"), ("rejected", "")]


def test_the_users_file_names_the_reviewer_and_replaces_the_api_key(users_server, nifti):
    with users_server.client() as anonymous:
        refused = anonymous.get("/v1/cases")
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
        assert anonymous.get("/v1/cases", headers={"X-API-Key": "k3y"}).status_code == 401
        assert anonymous.get("/v1/model", headers={"X-API-Key": "k3y"}).status_code == 200
        assert anonymous.get("/v1/cases", auth=("ann", "wrong")).status_code == 401
    with users_server.client(auth=("ann", "ann-pw")) as ann:
        case = create(ann, nifti, "signed", mask=label_mask()).json()
        assert case["revisions"][0]["author"] == "ann"
        url = f"/v1/cases/{case['id']}/review"
        forged = ann.put(url, json={"verdict": "accepted", "reviewer": "bob"}, headers={"If-Match": case["etag"]})
        assert forged.status_code == 403 and "signed in as 'ann'" in forged.json()["detail"]
        own = ann.put(url, json={"verdict": "accepted"}, headers={"If-Match": case["etag"]})
        assert own.status_code == 200 and own.json()["reviewer"] == "ann"
    bearer = {"Authorization": "Bearer bob:bob-pw", "If-Match": own.headers["etag"]}
    with users_server.client() as bob:
        answer = bob.put(url, json={"verdict": "rejected", "reviewer": "bob"}, headers=bearer)
        assert answer.status_code == 200 and [r["reviewer"] for r in answer.json()["reviews"]] == ["ann", "bob"]


def test_the_volume_downloads_byte_for_byte(client, nifti, tmp_path: Path):
    payload = nifti.encode(nifti.blob(SHAPE, seed=3))
    answer = client.post("/v1/cases", files={"volume": ("bytes.nii.gz", payload), "mask": ("m.nii.gz",
                         nifti.encode(label_mask()))})  # fmt: skip
    download = client.get(f"/v1/cases/{answer.json()['id']}/volume")
    assert download.content == payload
    assert 'filename="bytes.nii.gz"' in download.headers["content-disposition"]
    assert nib.load(nifti.decode(payload, tmp_path).get_filename()).shape == SHAPE
