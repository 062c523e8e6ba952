"""schemathesis against /openapi.json of a real uvicorn process: generated requests never get a 5xx.

Bounded and reproducible: 25 examples per operation, a fixed seed, no example database, one worker (about 3 s per
run). Besides `not_a_server_error`, every answer must match its documented status code, content type, headers and
schema. `positive_data_acceptance` is left out on purpose: schema-valid random bytes are not a NIfTI volume.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)


def fuzz(url: str, workdir: Path, *headers: str) -> subprocess.CompletedProcess[str]:
    command = [
        str(Path(sys.executable).with_name("schemathesis")), "run", f"{url}/openapi.json", "--checks", CHECKS,
        "--max-examples", "25", "--seed", "20260127", "--workers", "1", "--request-timeout", "60",
        "--generation-database", "none", "--report-dir", str(workdir), "--no-color",
    ]  # fmt: skip
    for header in headers:
        command += ["--header", header]
    return subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=300, check=False)


def generated_cases(output: str) -> int:
    match = re.search(r"(\d+) generated", output)
    assert match, output
    return int(match.group(1))


@pytest.mark.slow
@pytest.mark.parametrize("with_key", [False, True], ids=["open-server", "server-with-api-key"])
def test_generated_requests_never_get_a_server_error(tiny_server, strict_server, with_key: bool, tmp_path) -> None:
    server, headers = (strict_server, ["X-API-Key: s3cret-key"]) if with_key else (tiny_server, [])
    finished = fuzz(server.url, tmp_path, *headers)
    assert finished.returncode == 0, finished.stdout[-6000:]
    assert generated_cases(finished.stdout) >= 60
    # /health, /ready, /metrics, /v1/model, /v1/predict, /v1/stats and the 8 operations of /v1/cases and
    # /v1/reviews.csv
    assert "14 selected / 14 total" in finished.stdout
