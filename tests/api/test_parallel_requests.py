"""Requests that run side by side each get their own answer: the same mask as when sent alone, under their own name.

Two inference slots share one network, uploads stream concurrently: any cross-talk (a shared buffer, a temp path,
a progress or name variable) would hand one client another's mask. bench/load.py runs the same check at 500
requests on the shipped model.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pytest
from hostile_corpus import blob, nifti

SHAPES = ((24, 20, 16), (32, 24, 16))
SEEDS = (0, 1, 2, 3)
ROUNDS = 3


@pytest.fixture(scope="module")
def two_slot_server(launch_server, tiny_model_dir: Path) -> Iterator:
    server = launch_server(
        {"UNET3D_MODEL": str(tiny_model_dir), "UNET3D_MAX_CONCURRENCY": "2", "UNET3D_QUEUE_SIZE": "16"},
        name="two-slots",
    )
    yield server
    server.stop()


def mask_digest(payload: bytes, directory: Path) -> str:
    path = directory / f"{hashlib.sha256(payload).hexdigest()[:16]}.nii.gz"
    path.write_bytes(payload)
    return hashlib.sha256(np.asanyarray(nib.load(path).dataobj).tobytes()).hexdigest()


def predict(client: httpx.Client, index: int, payload: bytes) -> httpx.Response:
    return client.post("/v1/predict", params={"return_binary": "true"}, files={"file": (f"in{index}.nii.gz", payload)})


@pytest.mark.slow
def test_parallel_requests_with_different_inputs_each_get_their_own_mask(two_slot_server, tmp_path: Path) -> None:
    inputs = [nifti(blob(shape, seed=seed)) for shape in SHAPES for seed in SEEDS]
    with two_slot_server.client() as client:
        alone = [mask_digest(predict(client, i, payload).content, tmp_path) for i, payload in enumerate(inputs)]
    assert len(set(alone)) == len(inputs), "inputs must differ in their masks, or a mix-up would go unnoticed"

    barrier = threading.Barrier(len(inputs))
    answers: dict[int, list[httpx.Response]] = {i: [] for i in range(len(inputs))}

    def send(index: int) -> None:
        with two_slot_server.client() as client:
            barrier.wait()
            for _ in range(ROUNDS):
                answers[index].append(predict(client, index, inputs[index]))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for index, responses in answers.items():
        assert [r.status_code for r in responses] == [200] * ROUNDS, [r.text for r in responses]
        for response in responses:
            assert response.headers["content-disposition"] == f'attachment; filename="in{index}_mask.nii.gz"'
            assert mask_digest(response.content, tmp_path) == alone[index]
    assert "unet3d_inference_in_progress 0.0" in httpx.get(f"{two_slot_server.url}/metrics").text
    assert two_slot_server.temp_files() == []
