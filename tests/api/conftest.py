"""Fixtures for the service tests: the app in a real uvicorn process on a free loopback port, and NIfTI builders."""

from __future__ import annotations

import gzip
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import nibabel as nib
import numpy as np
import pytest
from helpers import ROOT, STRICT_KEY

if TYPE_CHECKING:
    from api.service import SegmentationService
    from api.ui.layout import Layout

EXAMPLE_VOLUME = ROOT / "api" / "examples" / "mni152_t1.nii.gz"
STARTUP_TIMEOUT_S = 90.0
QUIET_ENV = {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "GRADIO_ANALYTICS_ENABLED": "False"}


@dataclass
class Server:
    """A running service: its base URL, process, log file and private temp folder."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path
    tmp: Path

    def logs(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120.0, **kwargs)  # type: ignore[arg-type]

    def memory_kib(self, field: str = "VmRSS") -> int:
        """A memory figure of the server process from /proc/<pid>/status ("VmRSS", "VmHWM"), in KiB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
        raise RuntimeError(f"no {field} in /proc/{self.process.pid}/status")

    def reset_peak_memory(self) -> None:
        """Reset VmHWM to the current RSS (Linux >= 4.0), so that the next peak is the next request's."""
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")

    def temp_files(self) -> list[Path]:
        """Whatever the server left in its TMPDIR (every request's work folder must be gone)."""
        return sorted((self.tmp / "tmp").rglob("*"))

    def stop(self) -> None:
        """SIGTERM; after 3 s a SIGINT, which makes uvicorn stop waiting for open streams (a Gradio heartbeat)."""
        for stop_signal, wait_s in ((signal.SIGTERM, 3), (signal.SIGINT, 15)):
            if self.process.poll() is not None:
                return
            self.process.send_signal(stop_signal)
            try:
                self.process.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                continue
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=15)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_env(tmp: Path, settings: dict[str, str]) -> dict[str, str]:
    """The parent environment without UNET3D_*, plus offline flags, private temp folders and `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNET3D_")}
    (tmp / "tmp").mkdir(parents=True, exist_ok=True)
    env.update(QUIET_ENV)
    env.update({"TMPDIR": str(tmp / "tmp"), "GRADIO_TEMP_DIR": str(tmp / "gradio"), "PYTHONUNBUFFERED": "1"})
    env["UNET3D_DATA_DIR"] = str(tmp / "data")  # review storage: private to this server unless settings say otherwise
    env.update(settings)
    return env


def start_server(tmp: Path, settings: dict[str, str], *, command: Sequence[str] | None = None) -> Server:
    """Start `uvicorn api.main:app` (or `command`, which gets --host/--port) and wait until /health answers."""
    port = free_port()
    argv = list(command or [sys.executable, "-m", "uvicorn", "api.main:app"])
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    log = tmp / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            argv, cwd=ROOT, env=service_env(tmp, settings), stdout=sink, stderr=subprocess.STDOUT
        )
    server = Server(f"http://127.0.0.1:{port}", process, log, tmp)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.logs()}")
        try:
            if httpx.get(f"{server.url}/health", timeout=2.0).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"server did not answer /health within {STARTUP_TIMEOUT_S} s:\n{server.logs()}")


@pytest.fixture(scope="session")
def launch_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Server]]:
    """Start a server with the given settings (stopped at the end of the session, or earlier by its user)."""
    servers: list[Server] = []

    def launch(
        settings: dict[str, str],
        name: str = "server",
        *,
        command: Sequence[str] | None = None,
        home: Path | None = None,
    ) -> Server:
        """`home`: the server's folder (its TMPDIR, Gradio and data folders), e.g. with files planted beforehand."""
        servers.append(start_server(home or tmp_path_factory.mktemp(name), settings, command=command))
        return servers[-1]

    yield launch
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def tiny_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Default settings, the tiny random model."""
    server = start_server(tmp_path_factory.mktemp("tiny-server"), {"UNET3D_MODEL": str(tiny_model_dir)})
    yield server
    server.stop()


STRICT_ORIGIN = "https://review.example.org"
STRICT_SETTINGS = {
    "UNET3D_API_KEY": STRICT_KEY,
    "UNET3D_MAX_UPLOAD_MB": "0.25",
    "UNET3D_MAX_VOXELS": "40000",
    "UNET3D_MAX_DECOMPRESSED_MB": "0.1",
    "UNET3D_MAX_CONCURRENCY": "1",
    "UNET3D_QUEUE_SIZE": "0",
    "UNET3D_ALLOW_ORIGINS": STRICT_ORIGIN,
}


@pytest.fixture(scope="session")
def strict_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """API key, small caps, one slot and no queue, CORS for one origin; started through `unet3d serve`."""
    command = [str(Path(sys.executable).with_name("unet3d")), "serve"]
    settings = {**STRICT_SETTINGS, "UNET3D_MODEL_PATH": str(tiny_model_dir)}
    server = start_server(tmp_path_factory.mktemp("strict-server"), settings, command=command)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def brain_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The shipped brain-tissue model with default settings (real results; ~5-10 s per MNI152 prediction)."""
    server = start_server(tmp_path_factory.mktemp("brain-server"), {})
    yield server
    server.stop()


class NiftiKit:
    """Builders for test volumes (exposed through the `nifti` fixture: conftest modules are not importable)."""

    @staticmethod
    def blob(shape: tuple[int, ...] = (24, 20, 16), seed: int = 0, dtype: type = np.float32) -> np.ndarray:
        """A smooth blob with a little noise: gives the random tiny model a mixed mask."""
        rng = np.random.default_rng(seed)
        grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape[:3]], indexing="ij"))
        blob = np.exp(-3 * (grid**2).sum(0)) * 1000 + rng.normal(0, 30, shape[:3])
        return blob.reshape(shape).astype(dtype)

    @staticmethod
    def encode(
        data: np.ndarray,
        affine: np.ndarray | None = None,
        *,
        qform_code: int = 1,
        sform_code: int = 4,
        gz: bool = True,
    ) -> bytes:
        """A NIfTI-1 file in memory with explicit codes; the sform is shifted by 0.5 mm to tell it from the qform."""
        affine = np.eye(4) if affine is None else affine
        image = nib.Nifti1Image(data, affine)
        image.set_qform(affine, code=qform_code)
        shifted = affine.copy()
        shifted[:3, 3] += 0.5
        image.set_sform(shifted, code=sform_code)
        raw = image.to_bytes()
        return gzip.compress(raw, compresslevel=1) if gz else raw

    @staticmethod
    def oblique_affine(spacing: tuple[float, float, float] = (1.2, 0.9, 2.0)) -> np.ndarray:
        """An LPS-like, slightly rotated voxel-to-world matrix with anisotropic spacing."""
        angle = np.deg2rad(12)
        rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
        affine = np.eye(4)
        affine[:3, :3] = rotation @ np.diag([-spacing[0], -spacing[1], spacing[2]])
        affine[:3, 3] = [40.0, -12.0, 7.5]
        return affine

    @staticmethod
    def decode(payload: bytes, directory: Path, name: str = "decoded.nii.gz") -> nib.Nifti1Image:
        path = directory / name
        path.write_bytes(payload)
        return nib.load(path)


@pytest.fixture(scope="session")
def nifti() -> type[NiftiKit]:
    return NiftiKit


@pytest.fixture
def run_until_exit(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the server (or `argv`) with `settings` in the service environment and return once it has exited."""

    def run(settings: dict[str, str], argv: Sequence[str] | None = None) -> subprocess.CompletedProcess[str]:
        command = list(argv or [sys.executable, "-m", "uvicorn", "api.main:app", "--port", str(free_port())])
        return subprocess.run(
            command, cwd=ROOT, env=service_env(tmp_path, settings), capture_output=True, text=True, timeout=120,
            check=False,
        )  # fmt: skip

    return run


# The review UI's handlers, driven without a browser (test_ui_events.py, test_ui_cases.py).


@pytest.fixture
def upload_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Gradio's upload cache, private to the test."""
    folder = tmp_path / "gradio-uploads"
    folder.mkdir()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(folder))
    return folder


@pytest.fixture(scope="module")
def service(tiny_model_dir: Path) -> SegmentationService:
    """The tiny model loaded as the server loads it, without a queue."""
    from api.service import SegmentationService
    from api.settings import Settings

    return SegmentationService.from_settings(Settings(UNET3D_MODEL=str(tiny_model_dir), queue_size=0))


@pytest.fixture(scope="module")
def layout() -> Layout:
    """The review UI's components, built once per module."""
    import gradio as gr

    from api.ui.layout import build_layout

    with gr.Blocks():
        return build_layout()
