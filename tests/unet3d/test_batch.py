"""Batch runs: results.csv, resuming a killed run, a bad case among good ones, shards, --overwrite, input lists."""

import csv
import gzip
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import sphere_volume, write_nifti, write_tiny_model

from unet3d.batch import Case, select_shard
from unet3d.batch.manifest import Outcome, manifest_columns, outcome_row
from unet3d.cli import main
from unet3d.errors import Unet3dError
from unet3d.io import inspect_volume

COLUMNS = [
    "case",
    "input",
    "output",
    "status",
    "error",
    "runtime_ms",
    "background_ml",
    "shell_ml",
    "core_ml",
    "qc_warnings",
    "model_id",
    "model_revision",
    "weights_sha256",
]


def _cohort(folder: Path, count: int, shape=(24, 20, 16)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [write_nifti(folder / f"case{k:02d}.nii.gz", sphere_volume(shape, seed=k)) for k in range(count)]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def _status(path: Path) -> dict[str, str]:
    return {row["case"]: row["status"] for row in _rows(path)}


def _predict(*args: str, model: Path) -> int:
    return main(["predict", *args, "--model", str(model)])


def test_results_csv_has_one_row_per_case_with_volumes_and_the_model(tiny_model_dir, tmp_path, capsys):
    inputs = _cohort(tmp_path / "in", 2)
    out = tmp_path / "out"
    assert _predict(str(tmp_path / "in"), "-o", str(out), "--json", model=tiny_model_dir) == 0
    with open(out / "results.csv", newline="") as file:
        assert next(csv.reader(file)) == COLUMNS
    rows = _rows(out / "results.csv")
    summaries = [line for line in capsys.readouterr().out.splitlines() if line]
    assert [row["case"] for row in rows] == ["case00", "case01"] and len(summaries) == 2
    for row, source in zip(rows, inputs, strict=True):
        assert row["status"] == "ok" and row["error"] == "" and float(row["runtime_ms"]) > 0
        assert row["input"] == str(source) and row["output"] == str(out / f"{row['case']}_mask.nii.gz")
        mask = np.asarray(nib.load(row["output"]).dataobj)
        volumes = [float(row[f"{name}_ml"]) for name in ("background", "shell", "core")]
        assert volumes == pytest.approx([np.count_nonzero(mask == c) / 1000 for c in range(3)])  # 1 mm voxels
        assert row["model_id"] == str(tiny_model_dir) and row["model_revision"] == "local"
        assert len(row["weights_sha256"]) == 64


def test_a_killed_run_resumes_skipping_finished_cases_and_never_leaves_a_truncated_mask(tiny_model_dir, tmp_path):
    _cohort(tmp_path / "in", 6, shape=(40, 36, 32))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "unet3d.cli", "predict", str(tmp_path / "in"), "-o", str(out)]
    command += ["--model", str(tiny_model_dir), "--device", "cpu"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not (out / "results.csv").exists() or not _rows(out / "results.csv"):
            assert process.poll() is None, "the run ended before its first row could be seen"
            assert time.monotonic() < deadline
            _assert_every_final_mask_is_whole(out)
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    _assert_every_final_mask_is_whole(out)
    recorded = {row["case"]: row for row in _rows(out / "results.csv")}
    assert 1 <= len(recorded) < 6 and {row["status"] for row in recorded.values()} == {"ok"}
    # A kill between a mask's rename and its row leaves a finished case without a row: it is skipped too.
    finished = {path.name.removesuffix("_mask.nii.gz") for path in out.glob("*_mask.nii.gz")}
    assert set(recorded) <= finished
    (out / "case05_mask.nii.gz.tmp-4242").write_bytes(b"half a mask")  # as a kill in mid-write leaves one

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    rows = {row["case"]: row for row in _rows(out / "results.csv")}
    assert sorted(rows) == [f"case{k:02d}" for k in range(6)]
    for case, row in rows.items():
        assert row["status"] == ("skipped" if case in finished else "ok"), (case, row["status"])
        if case in recorded:  # a skipped case keeps what the killed run measured
            assert row["shell_ml"] == recorded[case]["shell_ml"] and row["weights_sha256"]
    assert not list(out.glob("*.tmp-*"))
    _assert_every_final_mask_is_whole(out)


def _assert_every_final_mask_is_whole(folder: Path) -> None:
    for mask in folder.glob("*_mask.nii.gz"):
        try:
            image = inspect_volume(mask)  # reads the whole gzip stream: a truncated file fails here
        except Unet3dError as e:
            raise AssertionError(f"{mask.name} is not a whole NIfTI file: {e}") from e
        assert image.shape == (40, 36, 32)


def test_a_corrupt_case_among_good_ones_fails_alone_and_the_run_exits_1(tiny_model_dir, tmp_path, capsys):
    inputs = _cohort(tmp_path / "in", 3)
    corrupt = tmp_path / "in" / "broken.nii.gz"
    corrupt.write_bytes(inputs[0].read_bytes()[:-200])  # a download cut short
    out = tmp_path / "out"
    assert _predict(str(tmp_path / "in"), "-o", str(out), model=tiny_model_dir) == 1
    rows = {row["case"]: row for row in _rows(out / "results.csv")}
    assert {case: row["status"] for case, row in rows.items()} == {
        "broken": "failed",
        "case00": "ok",
        "case01": "ok",
        "case02": "ok",
    }
    error = rows["broken"]["error"]
    assert "truncated" in error or "corrupt" in error, error
    assert rows["broken"]["output"] == "" and not (out / "broken_mask.nii.gz").exists()
    stderr = capsys.readouterr().err
    assert f"{corrupt}: {error}" in stderr and f"1 of 4 cases failed: see {out / 'results.csv'}" in stderr


@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_shards_partition_the_cases_whatever_the_input_order(count):
    cases = [Case(f"sub-{k:03d}", Path(f"sub-{k:03d}.nii.gz"), Path(f"sub-{k:03d}_mask.nii.gz")) for k in range(11)]
    shards = [select_shard(cases, index, count) for index in range(count)]
    names = [{case.case for case in shard} for shard in shards]
    assert set().union(*names) == {case.case for case in cases}
    assert sum(len(n) for n in names) == len(cases)  # no case in two shards
    assert max(map(len, names)) - min(map(len, names)) <= 1
    shuffled = cases[:]
    random.Random(count).shuffle(shuffled)
    assert [{c.case for c in select_shard(shuffled, index, count)} for index in range(count)] == names
    assert [c.case for c in shards[0]] == [c.case for c in cases if c.case in names[0]]  # the given order is kept


def test_concurrent_shards_in_one_folder_merge_into_one_results_csv(tiny_model_dir, tmp_path):
    _cohort(tmp_path / "in", 5)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "unet3d.cli", "predict", str(tmp_path / "in"), "-o", str(out)]
    command += ["--model", str(tiny_model_dir)]
    runs = [
        subprocess.Popen(
            [*command, "--shard", f"{index}/2"],
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(2)
    ]
    for run in runs:
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr
    first, second = _status(out / "results-0-of-2.csv"), _status(out / "results-1-of-2.csv")
    assert sorted(first) == ["case00", "case02", "case04"] and sorted(second) == ["case01", "case03"]
    merged = _rows(out / "results.csv")
    assert sorted(row["case"] for row in merged) == [f"case{k:02d}" for k in range(5)]
    assert {row["status"] for row in merged} == {"ok"} and not list(out.glob("*.tmp-*"))


def test_a_shard_out_of_range_is_refused_before_any_work(tmp_path, capsys):
    _cohort(tmp_path / "in", 1)
    assert main(["predict", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--shard", "4/4"]) == 1
    assert "--array=0-3" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_a_rerun_skips_complete_outputs_and_overwrite_redoes_them(tiny_model_dir, tmp_path, capsys):
    _cohort(tmp_path / "in", 2)
    out = tmp_path / "out"
    assert _predict(str(tmp_path / "in"), "-o", str(out), model=tiny_model_dir) == 0
    written = {p.name: p.stat().st_mtime_ns for p in out.glob("*_mask.nii.gz")}
    assert _predict(str(tmp_path / "in"), "-o", str(out), model=tiny_model_dir) == 0
    assert "2 of 2 cases already done" in capsys.readouterr().err
    assert set(_status(out / "results.csv").values()) == {"skipped"}
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*_mask.nii.gz")} == written
    assert _predict(str(tmp_path / "in"), "-o", str(out), "--overwrite", model=tiny_model_dir) == 0
    assert set(_status(out / "results.csv").values()) == {"ok"}
    assert all(p.stat().st_mtime_ns != written[p.name] for p in out.glob("*_mask.nii.gz"))


def test_a_damaged_or_foreign_mask_under_the_final_name_is_redone(tiny_model_dir, tmp_path):
    _cohort(tmp_path / "in", 3)
    out = tmp_path / "out"
    assert _predict(str(tmp_path / "in"), "-o", str(out), model=tiny_model_dir) == 0
    damaged = out / "case00_mask.nii.gz"
    damaged.write_bytes(damaged.read_bytes()[:-100])
    write_nifti(out / "case01_mask.nii.gz", np.zeros((24, 20, 16), np.uint8))  # another tool's file, same grid
    assert _predict(str(tmp_path / "in"), "-o", str(out), model=tiny_model_dir) == 0
    assert _status(out / "results.csv") == {"case00": "ok", "case01": "ok", "case02": "skipped"}
    assert inspect_volume(damaged).shape == (24, 20, 16)


def test_a_skipped_case_without_an_earlier_row_is_measured_from_its_mask(tiny_model_dir, tmp_path):
    _cohort(tmp_path / "in", 1)
    out = tmp_path / "out"
    assert _predict(str(tmp_path / "in"), "-o", str(out), model=tiny_model_dir) == 0
    (before,) = _rows(out / "results.csv")
    (out / "results.csv").unlink()
    assert _predict(str(tmp_path / "in"), "-o", str(out), model=tiny_model_dir) == 0
    (after,) = _rows(out / "results.csv")
    assert after["status"] == "skipped"
    assert [after[c] for c in ("background_ml", "shell_ml", "core_ml")] == [
        before[c] for c in ("background_ml", "shell_ml", "core_ml")
    ]
    assert after["weights_sha256"] == ""  # a mask does not record which weights made it


def test_resuming_over_masks_of_other_weights_is_refused(tiny_model_dir, tmp_path, capsys):
    _cohort(tmp_path / "in", 2)
    out = tmp_path / "out"
    other = write_tiny_model(tmp_path / "other-model", seed=1)
    assert _predict(str(tmp_path / "in"), "-o", str(out), model=tiny_model_dir) == 0
    before = (out / "results.csv").read_text()
    assert _predict(str(tmp_path / "in"), "-o", str(out), model=other) == 1
    message = capsys.readouterr().err
    assert "2 finished case(s) in this folder were segmented by other weights" in message
    assert "pass --overwrite" in message and (out / "results.csv").read_text() == before
    assert _predict(str(tmp_path / "in"), "-o", str(out), "--overwrite", model=other) == 0
    assert {row["model_id"] for row in _rows(out / "results.csv")} == {str(other)}


def test_a_csv_list_names_the_cases_and_resolves_paths_from_its_folder(tiny_model_dir, tmp_path):
    inputs = _cohort(tmp_path / "data" / "scans", 2)
    listing = tmp_path / "data" / "cohort.csv"
    listing.write_text(f"site,input,case\nA,scans/{inputs[0].name},sub-01\nB,{inputs[1]},sub-02\n", encoding="utf-8")
    out = tmp_path / "out"
    assert _predict(str(listing), "-o", str(out), model=tiny_model_dir) == 0
    rows = _rows(out / "results.csv")
    assert [(row["case"], row["status"]) for row in rows] == [("sub-01", "ok"), ("sub-02", "ok")]
    assert sorted(p.name for p in out.glob("*_mask.nii.gz")) == ["sub-01_mask.nii.gz", "sub-02_mask.nii.gz"]
    assert rows[0]["input"] == str(tmp_path / "data" / "scans" / inputs[0].name)


def test_a_text_list_and_a_glob_give_the_same_cases(tiny_model_dir, tmp_path):
    inputs = _cohort(tmp_path / "in", 2)
    listing = tmp_path / "in" / "cases.txt"
    listing.write_text(f"# the cohort\n{inputs[0].name}\n\n{inputs[1]}\n", encoding="utf-8")
    assert _predict(str(listing), "-o", str(tmp_path / "a"), model=tiny_model_dir) == 0
    assert _predict(str(tmp_path / "in" / "case*.nii.gz"), "-o", str(tmp_path / "b"), model=tiny_model_dir) == 0
    assert _status(tmp_path / "a" / "results.csv") == _status(tmp_path / "b" / "results.csv")
    assert sorted(_status(tmp_path / "a" / "results.csv")) == ["case00", "case01"]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("path,case\na.nii.gz,x\n", "has no 'input' column (its columns: path, case)"),
        ("input,case\na.nii.gz,x\nb.nii.gz,x\n", "several inputs share the name 'x'"),
        ("input,case\na.nii.gz,../x\n", "case id '../x' cannot name a file"),
        ("input\n\n", "lists no inputs"),
    ],
)
def test_a_malformed_csv_list_is_refused_with_what_to_fix(tmp_path, capsys, content, fragment):
    listing = tmp_path / "cohort.csv"
    listing.write_text(content, encoding="utf-8")
    assert main(["predict", str(listing), "-o", str(tmp_path / "out"), "--model", "/no/such/model"]) == 1
    err = capsys.readouterr().err
    assert fragment in err and err.startswith("unet3d: error:") and err.count("\n") == 1


def test_a_glob_matching_nothing_is_refused(tmp_path, capsys):
    assert main(["predict", str(tmp_path / "*.nii.gz"), "-o", str(tmp_path / "out")]) == 1
    assert "matches no .nii or .nii.gz files" in capsys.readouterr().err


def test_qc_warnings_join_the_summary_warnings_and_stay_empty_without_qc():
    case = Case("c", Path("c.nii.gz"), Path("out/c_mask.nii.gz"))
    classes = [{"name": "background", "volume_ml": 1.5}, {"name": "grey matter", "volume_ml": 2.25}]
    columns = manifest_columns(["background", "grey matter"])
    assert columns[6:8] == ["background_ml", "grey_matter_ml"]
    model = {"id": "m", "revision": "r", "sha256": "s"}
    with_qc = {"classes": classes, "qc": {"score": 0.4, "warnings": ["low contrast", "cut at the top"]}}
    row = outcome_row(Outcome(case, "ok", runtime_ms=12.34, summary=with_qc, model=model), columns)
    assert row["qc_warnings"] == "low contrast; cut at the top" and row["grey_matter_ml"] == "2.25"
    assert row["runtime_ms"] == "12.3" and row["weights_sha256"] == "s"
    without = outcome_row(Outcome(case, "ok", summary={"classes": classes}, model=model), columns)
    assert without["qc_warnings"] == ""
    failed = outcome_row(Outcome(case, "failed", error="bad\nheader", model=model), columns)
    assert failed["error"] == "bad header" and failed["output"] == ""


def test_masks_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    from unet3d import atomic
    from unet3d.io import save_mask, volume_from_array

    volume = volume_from_array(sphere_volume())
    target = tmp_path / "m_mask.nii.gz"
    save_mask(np.ones(volume.shape, np.uint8), volume, target)
    old = target.read_bytes()
    assert gzip.decompress(old)  # a whole gzip stream

    def disk_full(descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_mask(np.zeros(volume.shape, np.uint8), volume, target)
    assert target.read_bytes() == old and sorted(os.listdir(tmp_path)) == ["m_mask.nii.gz"]


def test_with_probabilities_a_case_is_complete_only_with_both_files(tiny_model_dir, tmp_path):
    _cohort(tmp_path / "in", 2)
    out = tmp_path / "out"
    run = [str(tmp_path / "in"), "-o", str(out), "--probabilities"]
    assert _predict(*run, model=tiny_model_dir) == 0
    assert _predict(*run, model=tiny_model_dir) == 0
    assert set(_status(out / "results.csv").values()) == {"skipped"}
    (out / "case01_probabilities.nii.gz").unlink()
    assert _predict(*run, model=tiny_model_dir) == 0
    assert _status(out / "results.csv") == {"case00": "skipped", "case01": "ok"}
    assert nib.load(out / "case01_probabilities.nii.gz").shape == (24, 20, 16, 3)


def test_a_listed_file_that_does_not_exist_is_a_failed_row_not_the_end_of_the_run(tiny_model_dir, tmp_path, capsys):
    inputs = _cohort(tmp_path / "in", 1)
    listing = tmp_path / "cases.txt"
    listing.write_text(f"{inputs[0]}\nin/ghost.nii.gz\n", encoding="utf-8")
    assert _predict(str(listing), "-o", str(tmp_path / "out"), model=tiny_model_dir) == 1
    rows = {row["case"]: row for row in _rows(tmp_path / "out" / "results.csv")}
    assert rows["case00"]["status"] == "ok" and rows["ghost"]["status"] == "failed"
    assert rows["ghost"]["error"] == f"no such file: '{tmp_path / 'in' / 'ghost.nii.gz'}'"
    assert "1 of 2 cases failed" in capsys.readouterr().err
