"""Reliability against a real uvicorn process, on SQLite and on PostgreSQL: SIGKILL in the middle of saves loses
nothing acknowledged and leaves no half-written file; concurrent reviewers never overwrite each other."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest

from api.cases.files import TEMP_PREFIX

SHAPE = (64, 64, 48)


@pytest.fixture
def storage(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    """Settings that point a server at a fresh data folder (and, for PostgreSQL, a fresh database)."""
    settings = {"UNET3D_DATA_DIR": str(tmp_path / "data")}
    if backend == "postgresql":
        settings["UNET3D_DATABASE_URL"] = request.getfixturevalue("postgres").create_database("served")
    return settings


def random_mask(seed: int) -> np.ndarray:
    """Three labels in blocks of 4 voxels: a plausible mask whose .nii.gz takes a moment to write."""
    coarse = np.random.default_rng(seed).integers(0, 3, size=(16, 16, 12), dtype=np.uint8)
    return coarse.repeat(4, 0).repeat(4, 1).repeat(4, 2)


def new_case(client: httpx.Client, nifti, name: str) -> dict:
    files = {"volume": (f"{name}.nii.gz", nifti.encode(nifti.blob(SHAPE))),
             "mask": (f"{name}_mask.nii.gz", nifti.encode(random_mask(0)))}  # fmt: skip
    answer = client.post("/v1/cases", files=files)
    assert answer.status_code == 201, answer.text
    return answer.json()


class Worker(threading.Thread):
    """Alternates verdicts and mask revisions on one case until the server dies; remembers what was acknowledged."""

    def __init__(self, url: str, case: dict, nifti, index: int) -> None:
        super().__init__(daemon=True)
        self.url, self.case, self.nifti, self.index = url, case, nifti, index
        self.verdicts: list[str] = []
        self.masks: dict[int, np.ndarray] = {}
        self.statuses: Counter[int] = Counter()
        self.cut_off = False

    def run(self) -> None:
        etag, step = self.case["etag"], 0
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while True:
                step += 1
                try:
                    etag = self._save(client, etag, step)
                except httpx.TransportError:
                    self.cut_off = True
                    return

    def _save(self, client: httpx.Client, etag: str, step: int) -> str:
        url = f"/v1/cases/{self.case['id']}"
        if step % 2:
            note = f"w{self.index}-{step}"
            answer = client.put(f"{url}/review", json={"verdict": "needs_correction", "note": note, "reviewer": "w"},
                                headers={"If-Match": etag})  # fmt: skip
            if answer.status_code == 200:
                self.verdicts.append(note)
        else:
            mask = random_mask(1000 * self.index + step)
            answer = client.post(f"{url}/masks", params={"author": "w"}, headers={"If-Match": etag},
                                 files={"mask": ("m.nii.gz", self.nifti.encode(mask))})  # fmt: skip
            if answer.status_code == 201:
                self.masks[answer.json()["latest_revision"]] = mask
        self.statuses[answer.status_code] += 1
        return answer.headers.get("etag", etag)


@pytest.mark.slow
def test_sigkill_while_saving_loses_nothing_acknowledged(launch_server, tiny_model_dir, storage, nifti, tmp_path):
    settings = {"UNET3D_MODEL": str(tiny_model_dir), **storage}
    server = launch_server(settings, name="killed")
    with server.client() as client:
        cases = [new_case(client, nifti, f"k{i}") for i in range(4)]
    workers = [Worker(server.url, case, nifti, i) for i, case in enumerate(cases)]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + 60
    while sum(len(w.verdicts) + len(w.masks) for w in workers) < 24 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(server.process.pid, signal.SIGKILL)  # mid-flight: every worker has a request open or about to be
    for worker in workers:
        worker.join(timeout=60)
    assert all(w.cut_off for w in workers)
    assert all(set(w.statuses) <= {200, 201} for w in workers), [w.statuses for w in workers]
    objects = Path(storage["UNET3D_DATA_DIR"]) / "objects"
    for path in objects.rglob("*"):
        if path.is_file() and not path.name.startswith(TEMP_PREFIX):
            assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name.split(".")[0], path
    restarted = launch_server(settings, name="restarted")
    with restarted.client() as client:
        for worker in workers:
            case = client.get(f"/v1/cases/{worker.case['id']}").json()
            assert set(worker.verdicts) <= {r["note"] for r in case["reviews"]}
            assert case["version"] == 1 + len(case["reviews"]) + case["latest_revision"]
            for number, mask in worker.masks.items():
                saved = nifti.decode(client.get(f"/v1/cases/{case['id']}/masks/{number}").content, tmp_path)
                assert np.array_equal(np.asarray(saved.dataobj), mask)


@pytest.mark.slow
def test_four_reviewers_times_200_verdicts_never_overwrite_each_other(
    launch_server, tiny_model_dir, storage, nifti
):  # fmt: skip
    server = launch_server({"UNET3D_MODEL": str(tiny_model_dir), **storage}, name="contended")
    with server.client() as client:
        case = new_case(client, nifti, "contended")
    url = f"/v1/cases/{case['id']}"
    results: list[tuple[str, int, str]] = []
    lock = threading.Lock()

    def reviewer(name: str) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for attempt in range(200):
                etag = client.get(url).headers["etag"]
                body = {"verdict": "accepted", "note": f"{name}-{attempt}", "reviewer": name}
                answer = client.put(f"{url}/review", json=body, headers={"If-Match": etag})
                with lock:
                    results.append((body["note"], answer.status_code, etag))

    threads = [threading.Thread(target=reviewer, args=(f"reviewer{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = Counter(status for _, status, _ in results)
    assert len(results) == 800 and set(statuses) <= {200, 409, 412}, statuses
    acknowledged = [(note, etag) for note, status, etag in results if status == 200]
    assert len({etag for _, etag in acknowledged}) == len(acknowledged)  # no two saves built on one version
    final = httpx.get(f"{server.url}{url}", timeout=60).json()
    assert sorted(r["note"] for r in final["reviews"]) == sorted(note for note, _ in acknowledged)
    assert final["version"] == 1 + len(acknowledged)
    assert statuses[200] >= 200  # contention refuses some, but the reviewers do get through
