import subprocess
import sys

from helpers import ROOT


def _run_without(modules: list[str], *arguments: str) -> subprocess.CompletedProcess[str]:
    # None in sys.modules makes `import NAME` fail as it does in the service's venv, where it is not installed.
    blocked = "; ".join(f"sys.modules[{name!r}] = None" for name in modules)
    code = f"import runpy, sys; {blocked}; runpy.run_module('train', run_name='__main__')"
    return subprocess.run([sys.executable, "-c", code, *arguments], capture_output=True, text=True, cwd=ROOT)


def test_without_the_training_extras_evaluate_says_how_to_install_them(tmp_path):
    result = _run_without(["matplotlib"], "evaluate", "--model", "m", "--data", str(tmp_path), "--out", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "python -m train: error: evaluate needs the training extras (matplotlib is missing): "
        "run scripts/setup.sh --train (or pip install -r requirements-train.txt)"
    ]


def test_fit_needs_none_of_the_training_extras(tmp_path):
    # A bare GPU machine has the core's dependencies only: fit must get as far as reading the dataset.
    result = _run_without(
        ["matplotlib", "nilearn", "optuna"], "fit", "--config", str(ROOT / "train/configs/tiny.yaml"),
        "--set", f"data.root={tmp_path}", "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert result.returncode == 1
    assert "dataset.json not found" in result.stderr and "extras" not in result.stderr
