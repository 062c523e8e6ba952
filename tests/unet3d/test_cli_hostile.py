"""The bad-input corpora (tests/hostile_corpus.py, tests/hostile_dicom.py) through `unet3d predict`: one line, no
traceback, exit code 1.

Each file goes through the CLI's `main()` in this process (an exception escaping it fails the test, as a traceback
would); one run of the installed console script on the whole corpus checks what a shell user sees.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hostile_corpus import FILE_CASES, SHAPE, Case, leaks
from hostile_dicom import PHI, DicomCase, dicom_corpus

from unet3d.cli import main


def disk_name(case: Case) -> str:
    """The case's file name as the user would have it on disk (its last path component)."""
    return os.fsdecode(case.filename.replace(b"\\", b"/").rsplit(b"/", 1)[-1])


def write(case: Case, directory: Path, *, unique: bool = False) -> Path:
    assert case.content is not None
    name = disk_name(case)
    path = directory / (f"{case.id}.{name.split('.', 1)[1]}" if unique else name)
    path.write_bytes(case.content())
    return path


def predict(source: Path, output: Path, model: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["predict", str(source), "-o", str(output), "--model", str(model), "--device", "cpu"])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", FILE_CASES, ids=lambda case: case.id)
def test_cli_answers_hostile_input_with_one_line_and_the_exit_code(
    case: Case, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, output = write(case, tmp_path), tmp_path / "out" / "mask.nii.gz"
    code, stderr = predict(source, output, tiny_model_dir, capsys)
    expected_code, fragment = case.cli_outcome
    assert code == expected_code, stderr
    if code:
        assert stderr.count("\n") == 1 and stderr.startswith("unet3d: error: "), stderr
        assert fragment in stderr
        assert leaks(stderr.replace(str(source), "<input>")) == [], stderr
        assert not output.exists()
        return
    assert output.exists()
    if case.reference is not None:
        reference = tmp_path / "reference.nii.gz"
        reference.write_bytes(case.reference())
        assert predict(reference, tmp_path / "reference_mask.nii.gz", tiny_model_dir, capsys)[0] == 0
        expected = np.asanyarray(nib.load(tmp_path / "reference_mask.nii.gz").dataobj)
        assert np.array_equal(np.asanyarray(nib.load(output).dataobj).reshape(SHAPE), expected)


@pytest.mark.slow
def test_console_script_reports_every_bad_file_on_one_line_and_exits_1(tiny_model_dir: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    sources = {case.id: write(case, inputs, unique=True) for case in FILE_CASES}
    script = Path(sys.executable).with_name("unet3d")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    command = [str(script), "predict", *map(str, sources.values()), "-o", str(tmp_path / "out"), "--device", "cpu"]
    finished = subprocess.run(
        [*command, "--model", str(tiny_model_dir)], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert finished.returncode == 1
    assert "Traceback" not in finished.stderr
    # Progress bars share stderr (several inputs): take each message up to the end of its line.
    errors = re.findall(r"unet3d: error: [^\r\n]*", finished.stderr)
    failing = [case for case in FILE_CASES if case.cli_outcome[0]]
    assert len(errors) == len(failing), finished.stderr
    for case in failing:
        [line] = [line for line in errors if f"{sources[case.id]}: " in line]
        assert case.cli_outcome[1] in line
    written = sorted(p.name for p in (tmp_path / "out").iterdir() if p.name != "results.csv")
    assert len(written) == len(FILE_CASES) - len(failing)
    with open(tmp_path / "out" / "results.csv", newline="", encoding="utf-8") as file:
        statuses = [row["status"] for row in csv.DictReader(file)]
    assert sorted(statuses) == sorted(["failed"] * len(failing) + ["ok"] * len(written))


@pytest.mark.parametrize("case", [c for c in dicom_corpus() if not c.limits], ids=lambda case: case.id)
def test_cli_answers_the_hostile_dicom_corpus_with_one_line_and_writes_nothing_beside(
    case: DicomCase, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each upload as the zip a PACS export gives (the CLI has no caps: the corpus' capped cases are HTTP's)."""
    source = tmp_path / "inputs" / "export.zip"
    source.parent.mkdir()
    source.write_bytes(case.content())
    output, seg = tmp_path / "out" / "mask.nii.gz", tmp_path / "out" / "mask.dcm"
    code = main(["predict", str(source), "-o", str(output), "--dicom-seg", str(seg), "--model", str(tiny_model_dir),
                 "--device", "cpu"])  # fmt: skip
    stderr = capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(
        ["export.zip", *(["mask.nii.gz", "mask.dcm"] if case.error is None else [])]
    ), stderr  # nothing extracted, nothing left half-written
    if case.error is None:
        assert code == 0 and str(nib.load(output).shape) == case.fragment, stderr
        return
    assert code == 1 and stderr.count("\n") == 1 and stderr.startswith("unet3d: error: "), stderr
    assert case.fragment in stderr
    # The path the user gave, and the zip's own entry name quoted back to them, are not the program's internals.
    shown = stderr.replace(str(source), "<input>").replace("'/tmp/evil/IM9999'", "<entry>")
    assert leaks(shown) == [], stderr
    assert [value for value in PHI if value in stderr] == []
