import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import ROOT, TINY_CONFIG
from safetensors.torch import load_file

WORKER = str(Path(__file__).with_name("ddp_worker.py"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*arguments: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), *arguments]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    with subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as process:  # fmt: skip
        try:
            stdout, stderr = process.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            # SIGTERM, not SIGKILL: torchrun then stops its workers (each in its own session) before it exits.
            process.terminate()
            process.communicate(timeout=60)
            raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.mark.slow
def test_two_cpu_processes_end_with_identical_weights(spheres, tmp_path):
    result = _torchrun(WORKER, str(TINY_CONFIG), str(spheres), str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (load_file(tmp_path / f"whole-rank{rank}.safetensors") for rank in (0, 1))
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    assert any(float(v.float().abs().sum()) > 0 for k, v in rank0.items() if "running_mean" in k)


@pytest.mark.slow
def test_a_resumed_two_process_run_ends_with_the_uninterrupted_runs_weights(spheres, tmp_path):
    for out, stage in ((tmp_path / "straight", "whole"), (tmp_path / "parts", "first-epoch"),
                       (tmp_path / "parts", "resume")):  # fmt: skip
        result = _torchrun(WORKER, str(TINY_CONFIG), str(spheres), str(out), stage)
        assert result.returncode == 0, result.stderr[-3000:]
    straight = load_file(tmp_path / "straight" / "whole-rank0.safetensors")
    for rank in (0, 1):
        resumed = load_file(tmp_path / "parts" / f"resume-rank{rank}.safetensors")
        for key, value in straight.items():
            assert torch.equal(value, resumed[key]), (rank, key)


@pytest.mark.slow
def test_torchrun_module_cli_exports_once_from_rank_zero(spheres, tmp_path):
    result = _torchrun("-m", "train", "fit", "--config", str(TINY_CONFIG), "--out", str(tmp_path / "run"),
                       "--set", f"data.root={spheres}", "--no-progress")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()
    assert result.stderr.count("exported") == 1
