"""Cohorts: the overlapped read → compute → write stages, and `Segmenter.predict_many` against a `predict` loop."""

from __future__ import annotations

import threading
import time

import nibabel as nib
import numpy as np
import pytest
from helpers import sphere_volume, write_nifti

from unet3d import Segmenter
from unet3d.errors import ParameterError, UnreadableVolumeError
from unet3d.pipeline import overlap


def test_results_come_in_input_order_and_a_failing_item_fails_alone():
    def read(n: int) -> int:
        time.sleep(0.02 * (n % 3))  # readers finish out of order
        if n == 3:
            raise ValueError("unreadable 3")
        return n

    def compute(n: int) -> int:
        if n == 5:
            raise RuntimeError("no memory for 5")
        return n * 10

    def write(n: int) -> str:
        if n == 70:
            raise OSError("disk full at 7")
        return f"wrote {n}"

    done = list(overlap(range(9), read, compute, write, prefetch=2, workers=3))
    assert [d.item for d in done] == list(range(9))
    assert [d.value for d in done if d.error is None] == [f"wrote {n * 10}" for n in (0, 1, 2, 4, 6, 8)]
    errors = {d.item: str(d.error) for d in done if d.error is not None}
    assert errors == {3: "unreadable 3", 5: "no memory for 5", 7: "disk full at 7"}


def test_reading_the_next_item_and_writing_the_last_overlap_the_computation():
    events: list[tuple[str, int, float]] = []
    lock = threading.Lock()

    def stage(name: str, seconds: float):
        def run(n: int) -> int:
            with lock:
                events.append((f"{name} start", n, time.perf_counter()))
            time.sleep(seconds)
            with lock:
                events.append((f"{name} end", n, time.perf_counter()))
            return n

        return run

    started = time.perf_counter()
    list(overlap(range(6), stage("read", 0.05), stage("compute", 0.05), stage("write", 0.05), workers=1))
    elapsed = time.perf_counter() - started
    at = {(name, n): t for name, n, t in events}
    for n in range(1, 5):
        # While item n is computed, item n+1 is being read and item n-1 written.
        assert at[("read start", n + 1)] < at[("compute end", n)]
        assert at[("write start", n - 1)] < at[("compute end", n)]
    assert elapsed < 0.75 * 6 * 3 * 0.05  # far from the 0.9 s of running the stages one after another


def test_reading_stays_a_bounded_distance_ahead_and_closing_early_stops_it():
    read: list[int] = []
    computed: list[int] = []

    def compute(n: int) -> int:
        computed.append(n)
        assert max(read) - n <= 2  # never more than `prefetch` items read ahead of the one computed
        return n

    results = overlap(range(100), lambda n: read.append(n) or n, compute, lambda n: n, prefetch=2, workers=2)
    first = [next(results).item for _ in range(5)]
    results.close()
    assert first == [0, 1, 2, 3, 4]
    assert len(read) <= 10 and len(computed) <= 8  # nothing like the 100 inputs


def test_prefetch_must_be_positive():
    with pytest.raises(ValueError, match="prefetch must be at least 1"):
        list(overlap([1], lambda n: n, lambda n: n, lambda n: n, prefetch=0))


@pytest.fixture(scope="module")
def segmenter(tiny_model_dir):
    return Segmenter.from_pretrained(tiny_model_dir, device="cpu")


def _cohort(folder, count=5):
    paths = []
    for n in range(count):
        affine = np.diag([1.0, 1.0 + 0.2 * n, 1.0, 1.0]) * ([1, -1, 1, 1] if n % 2 else 1)
        paths.append(write_nifti(folder / f"case{n}.nii.gz", sphere_volume((20 + n, 18, 16), seed=n), affine))
    return paths


def test_predict_many_gives_the_masks_of_a_predict_loop_and_writes_them(segmenter, tmp_path):
    paths = _cohort(tmp_path)
    expected = [segmenter.predict(path).mask for path in paths]
    results = list(segmenter.predict_many(paths, tmp_path / "masks", workers=2))
    assert [r.input for r in results] == paths
    for result, mask, path in zip(results, expected, paths, strict=True):
        assert result.error is None and result.prediction is not None
        assert np.array_equal(result.prediction.mask, mask)
        assert result.output == tmp_path / "masks" / f"{path.name.removesuffix('.nii.gz')}_mask.nii.gz"
        assert np.array_equal(np.asarray(nib.load(result.output).dataobj), mask)
        assert result.summary is not None and result.summary["filename"] == path.name
        assert result.runtime_ms > 0 and set(result.prediction.timings_ms) >= {"load", "infer", "encode"}


def test_a_corrupt_input_fails_alone_and_probabilities_go_where_asked(segmenter, tmp_path):
    paths = _cohort(tmp_path, count=3)
    paths[1].write_bytes(paths[1].read_bytes()[:200])  # truncated
    targets = [tmp_path / f"p{n}.nii.gz" for n in range(3)]
    results = list(
        segmenter.predict_many(paths, probabilities=True, probabilities_outputs=[targets[0], None, targets[2]])
    )
    assert isinstance(results[1].error, UnreadableVolumeError) and results[1].prediction is None
    assert results[0].output is None and results[0].prediction is not None  # no outputs: masks kept in memory
    assert results[0].probabilities_output == targets[0] and targets[0].exists() and targets[2].exists()
    stored = np.asarray(nib.load(targets[2]).dataobj)
    assert stored.shape == (*results[2].prediction.mask.shape, 3)


def test_predict_many_refuses_mismatched_outputs_and_orphan_probability_files(segmenter, tmp_path):
    paths = _cohort(tmp_path, count=2)
    with pytest.raises(ParameterError, match="2 inputs but 1 output paths"):
        segmenter.predict_many(paths, [tmp_path / "a.nii.gz"])
    with pytest.raises(ParameterError, match="probabilities_outputs needs probabilities=True"):
        segmenter.predict_many(paths, probabilities_outputs=tmp_path)
    with pytest.raises(ParameterError, match="overlap"):
        segmenter.predict_many(paths, overlap=2.0)


def test_with_no_workers_the_stages_take_turns_on_the_calling_thread():
    threads: set[str] = set()

    def stage(n: int) -> int:
        threads.add(threading.current_thread().name)
        if n == 2:
            raise ValueError("bad 2")
        return n

    done = list(overlap(range(4), stage, stage, stage, workers=0))
    assert [d.item for d in done] == [0, 1, 2, 3] and str(done[2].error) == "bad 2"
    assert threads == {threading.current_thread().name}
