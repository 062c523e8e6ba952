import subprocess
import sys

from helpers import ROOT


def test_without_the_training_extras_the_entry_point_says_how_to_install_them():
    # None in sys.modules makes `import matplotlib` fail as it does in the service's venv, where it is not installed.
    code = "import runpy, sys; sys.modules['matplotlib'] = None; runpy.run_module('train', run_name='__main__')"
    result = subprocess.run([sys.executable, "-c", code, "fit", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "python -m train: error: training needs its extras (matplotlib is missing): "
        "run scripts/setup.sh --train (or pip install -r requirements-train.txt)"
    ]
