"""Start the real service (uvicorn api.main:app) on a free loopback port for a benchmark, and wait for /health."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def start_server(
    model: Path,
    workdir: Path,
    *,
    max_concurrency: int = 1,
    queue_size: int = 8,
    own_tmpdir: bool = False,
    settings: dict[str, str] | None = None,
    serve: bool = False,
    ui: bool = True,
) -> tuple[subprocess.Popen[bytes], str]:
    """Launch the service with the given slots and queue (and any other UNET3D_* `settings`); logs go to
    `workdir/server.log`. Review data lives in `workdir/data` unless `settings` say otherwise. `serve`: start it as
    `unet3d serve` does (and the image), not with bare uvicorn. `ui=False` serves the HTTP API alone (no Gradio)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNET3D_")}
    env.update(
        UNET3D_MODEL=str(model),
        UNET3D_MAX_CONCURRENCY=str(max_concurrency),
        UNET3D_QUEUE_SIZE=str(queue_size),
        HF_HUB_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        GRADIO_ANALYTICS_ENABLED="False",
        GRADIO_TEMP_DIR=str(workdir / "gradio"),
        UNET3D_DATA_DIR=str(workdir / "data"),
    )
    env.update(settings or {})
    if own_tmpdir:
        (workdir / "tmp").mkdir(exist_ok=True)
        env["TMPDIR"] = str(workdir / "tmp")
    if serve:
        program = ["unet3d.cli", "serve", *([] if ui else ["--no-ui"])]
    else:
        program = ["uvicorn", "api.main:app"] if ui else ["uvicorn", "--factory", "api.main:create_api_app"]
    argv = [sys.executable, "-m", *program, "--host", "127.0.0.1", "--port", str(port)]
    with (workdir / "server.log").open("wb") as log:
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError((workdir / "server.log").read_text())
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the server did not answer /health within 120 s")
