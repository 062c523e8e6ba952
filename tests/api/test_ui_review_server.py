"""The review UI's server side through a real uvicorn process: the case files the viewer reads and writes (behind
the UI's login), the viewer's assets, and gradio_client's /review in another process, in the three login modes."""

from __future__ import annotations

import gzip
import json
import sys
import textwrap
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pytest
from helpers import STRICT_KEY

from api.cases.users import hash_password
from api.ui import bundle

REVIEW_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from gradio_client import Client
    url, case_id, verdict, reviewer, etag, *login = sys.argv[1:]
    client = Client(url, verbose=False, auth=tuple(login) if login else None)
    endpoint = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/review"]
    try:
        case = client.predict(int(case_id), verdict, 4, "looks right", reviewer, etag, api_name="/review")
    except Exception as error:  # the message the server sent, for the test to read
        print(json.dumps({"error": str(error)}))
        raise SystemExit(0)
    print(json.dumps({"case": case, "parameters": [p["parameter_name"] for p in endpoint["parameters"]]}))
    """
)


def new_case(client: httpx.Client, nifti, tmp_path: Path, name: str, author: str | None = "import") -> dict:
    """A case from a volume and a three-label mask, through POST /v1/cases (`author`: None when signed in)."""
    blob = nifti.blob()
    volume = nifti.encode(blob)
    path = tmp_path / f"{name}.nii.gz"
    path.write_bytes(volume)
    labels = ((blob > 300).astype(np.uint8) + (blob > 700)).astype(np.uint8)
    mask = tmp_path / f"{name}_mask.nii.gz"
    nib.save(nib.Nifti1Image(labels, nib.load(path).affine), mask)
    created = client.post(
        "/v1/cases", params={"name": name, **({"author": author} if author else {})},
        files={"volume": (path.name, volume), "mask": (mask.name, mask.read_bytes())},
    )  # fmt: skip
    assert created.status_code == 201, created.text
    return created.json()


def corrected(client: httpx.Client, case: dict, tmp_path: Path) -> bytes:
    """The case's revision 0 with its first four slices set to label 2, as the viewer's drawing would send it."""
    answer = client.get(f"/ui/case-files/{case['id']}/masks/0")
    image = nib.Nifti1Image.from_bytes(gzip.decompress(answer.content))
    labels = np.asarray(image.dataobj).copy()
    labels[:, :, :4] = 2
    path = tmp_path / "drawn.nii"
    nib.save(nib.Nifti1Image(labels, image.affine), path)  # uncompressed, as NiiVue exports it (gzip is optional)
    return path.read_bytes()


def run_review(run_until_exit, url: str, *arguments: str) -> dict:
    finished = run_until_exit({}, [sys.executable, "-c", REVIEW_SCRIPT, f"{url}/ui/", *arguments])
    assert finished.returncode == 0, finished.stderr
    return json.loads(finished.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def users_server(launch_server, tiny_model_dir, tmp_path_factory):
    """A server whose users file names ann and bob (passwords ann-pw and bob-pw)."""
    users = tmp_path_factory.mktemp("users") / "users"
    users.write_text("".join(f"{n}:{hash_password(f'{n}-pw', log2_n=10)}\n" for n in ("ann", "bob")))
    return launch_server({"UNET3D_MODEL": str(tiny_model_dir), "UNET3D_USERS_FILE": str(users)}, "users-server")


def test_the_viewer_reads_a_cases_volume_and_masks_from_the_ui(tiny_server, nifti, tmp_path):
    with tiny_server.client() as client:
        case = new_case(client, nifti, tmp_path, "files-case")
        volume = client.get(f"/ui/case-files/{case['id']}/volume")
        assert volume.status_code == 200 and volume.content == client.get(f"/v1/cases/{case['id']}/volume").content
        assert "immutable" in volume.headers["cache-control"]  # a stored file never changes: no request again
        mask = client.get(f"/ui/case-files/{case['id']}/masks/0")
        assert mask.status_code == 200 and mask.content == client.get(f"/v1/cases/{case['id']}/masks/0").content
        missing = client.get("/ui/case-files/999999/volume")
        assert missing.status_code == 404 and "no case has id 999999" in missing.json()["detail"]
        assert client.get(f"/ui/case-files/{case['id']}/masks/7").status_code == 404
        export = client.get("/ui/case-files/reviews.csv")
        assert export.status_code == 200 and "files-case" in export.text


def test_a_drawn_correction_needs_the_cases_etag_and_a_name(tiny_server, nifti, tmp_path):
    with tiny_server.client() as client:
        case = new_case(client, nifti, tmp_path, "save-case")
        drawn = {"mask": ("drawn.nii", corrected(client, case, tmp_path))}
        url = f"/ui/case-files/{case['id']}/masks"
        assert client.post(url, files=drawn, params={"author": "ann"}).status_code == 428  # no If-Match
        nameless = client.post(url, files=drawn, headers={"If-Match": case["etag"]})
        assert nameless.status_code == 422 and "Type your name" in nameless.json()["detail"]
        saved = client.post(url, files=drawn, headers={"If-Match": case["etag"]}, params={"author": "ann"})
        assert saved.status_code == 201, saved.text
        body = saved.json()
        assert saved.headers["etag"] == body["etag"] == f'"{case["id"]}.2"' and body["latest_revision"] == 1
        revision = body["revisions"][1]
        assert (revision["author"], revision["parent"], revision["source"]) == ("ann", 0, "correction")
        assert revision["changed_voxels"]["2"]["added"] > 0
        stale = client.post(url, files=drawn, headers={"If-Match": case["etag"]}, params={"author": "ann"})
        assert stale.status_code == 412 and "reload the case" in stale.json()["detail"]
        other_grid = tmp_path / "other.nii.gz"
        nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.uint8), np.eye(4)), other_grid)
        wrong = client.post(url, files={"mask": ("other.nii.gz", other_grid.read_bytes())},
                            headers={"If-Match": body["etag"]}, params={"author": "ann"})  # fmt: skip
        assert wrong.status_code == 422 and "not on the voxel grid" in wrong.json()["detail"]


def test_the_viewer_and_niivue_are_served_by_the_app_itself(tiny_server):
    assert bundle.installed(), bundle.INSTALL_HINT
    with tiny_server.client() as client:
        page = client.get("/ui/").text
        assert "viewer-assets/viewer.js" in page and "viewer-assets/viewer.css" in page
        script = client.get("/ui/viewer-assets/viewer.js")
        assert script.status_code == 200 and "unet3dViewer" in script.text
        niivue = client.get("/ui/viewer-assets/niivue.umd.js")
        assert niivue.status_code == 200 and niivue.headers["content-type"].startswith("text/javascript")
        assert niivue.content == bundle.NIIVUE_SCRIPT.read_bytes()
        assert client.get("/ui/viewer-assets/package.json").status_code == 404  # only the named assets


def test_gradio_client_records_a_verdict_through_the_review_endpoint(tiny_server, run_until_exit, nifti, tmp_path):
    with tiny_server.client() as client:
        case = new_case(client, nifti, tmp_path, "client-case")
    answer = run_review(run_until_exit, tiny_server.url, str(case["id"]), "needs_correction", "ann", case["etag"])
    assert answer["parameters"] == ["case_id", "verdict", "score", "note", "reviewer", "etag"]
    reviewed = answer["case"]
    assert (reviewed["status"], reviewed["reviewer"], reviewed["score"]) == ("needs_correction", "ann", 4)
    assert reviewed["reviews"][-1]["note"] == "looks right"
    stale = run_review(run_until_exit, tiny_server.url, str(case["id"]), "accepted", "ann", case["etag"])
    assert "changed since this tab loaded it" in stale["error"]
    nameless = run_review(run_until_exit, tiny_server.url, str(case["id"]), "accepted", "", "")
    assert "Type your name" in nameless["error"]


def test_with_an_api_key_the_login_name_is_the_reviewer(strict_server, run_until_exit, nifti, tmp_path):
    headers = {"X-API-Key": STRICT_KEY}
    with strict_server.client(headers=headers) as client:
        case = new_case(client, nifti, tmp_path, "key-case")
    assert httpx.get(f"{strict_server.url}/ui/case-files/{case['id']}/volume").status_code == 401
    answer = run_review(run_until_exit, strict_server.url, str(case["id"]), "accepted", "", "", "carol", STRICT_KEY)
    assert answer["case"]["reviewer"] == "carol"  # this mode trusts the typed name


def test_with_a_users_file_the_ui_signs_in_a_user_who_is_the_only_name_recorded(
    users_server, run_until_exit, nifti, tmp_path
):
    with users_server.client(auth=("ann", "ann-pw")) as api:
        case = new_case(api, nifti, tmp_path, "users-case", author=None)
    url = f"{users_server.url}/ui/case-files/{case['id']}"
    assert httpx.get(f"{url}/volume").status_code == 401  # not signed in to the UI
    page = httpx.get(f"{users_server.url}/ui/").text
    assert "Sign in with your reviewer name and password" in page
    with httpx.Client(base_url=users_server.url) as browser:
        assert browser.post("/ui/login", data={"username": "ann", "password": "wrong"}).status_code in (400, 422)
        assert browser.post("/ui/login", data={"username": "ann", "password": "ann-pw"}).json() == {"success": True}
        assert browser.get(f"{url}/volume").status_code == 200
        drawn = {"mask": ("drawn.nii", corrected(browser, case, tmp_path))}
        forged = browser.post(f"{url}/masks", files=drawn, headers={"If-Match": case["etag"]}, params={"author": "bob"})
        assert forged.status_code == 403 and "signed in as 'ann'" in forged.json()["detail"]
        saved = browser.post(f"{url}/masks", files=drawn, headers={"If-Match": case["etag"]})
        assert saved.status_code == 201 and saved.json()["revisions"][1]["author"] == "ann"
        etag = saved.json()["etag"]
    refused = run_review(run_until_exit, users_server.url, str(case["id"]), "accepted", "bob", etag, "ann", "ann-pw")
    assert "signed in as 'ann'" in refused["error"]
    answer = run_review(run_until_exit, users_server.url, str(case["id"]), "accepted", "", etag, "ann", "ann-pw")
    assert answer["case"]["reviewer"] == "ann" and answer["case"]["status"] == "accepted"
