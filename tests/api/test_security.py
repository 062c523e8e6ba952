"""Security properties: no unpickling anywhere, API key in constant time, CORS closed by default (the UI too).

Related tests elsewhere: a raw Gradio API call naming a server file (tests/api/test_ui.py), malicious pickles fed
as weights to the library (tests/unet3d/test_hub.py, test_segmenter.py) and to the service
(tests/api/test_faults.py), error bodies free of internals for every hostile input (tests/api/test_hostile_inputs.py),
the container's uid 1000 (scripts/container-smoke.sh, tests/test_container_smoke.py).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import ROOT
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from api.cors import SettingsCORSMiddleware
from api.settings import get_settings

PACKAGES = ("unet3d", "api", "train", "space")
FOREIGN = "https://attacker.example"
# Deserialisers that can run code from the bytes they read.
UNPICKLERS = {
    "torch.load", "torch.serialization.load", "torch.jit.load", "pickle.load", "pickle.loads", "pickle.Unpickler",
    "_pickle.load", "_pickle.loads", "dill.load", "dill.loads", "cloudpickle.load", "cloudpickle.loads",
    "joblib.load", "pandas.read_pickle", "shelve.open", "marshal.load", "marshal.loads",
}  # fmt: skip
# Training resumes its own checkpoints (optimizer state, not a model file) with torch's safe unpickler only.
ALLOWED_WEIGHTS_ONLY = ("train/",)


def qualified_calls(tree: ast.AST) -> Iterator[tuple[str, ast.Call]]:
    """Every call with its callee's dotted name, import aliases resolved (`from torch import load as f`: torch.load)."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            # `import a.b` binds `a`; `import a.b as c` binds `c` to `a.b`.
            aliases |= {a.asname: a.name for a in node.names if a.asname}
            aliases |= {a.name.split(".")[0]: a.name.split(".")[0] for a in node.names if not a.asname}
        elif isinstance(node, ast.ImportFrom) and node.module:
            aliases |= {alias.asname or alias.name: f"{node.module}.{alias.name}" for alias in node.names}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            parts: list[str] = []
            func: ast.expr = node.func
            while isinstance(func, ast.Attribute):
                parts.insert(0, func.attr)
                func = func.value
            if isinstance(func, ast.Name):
                yield ".".join([aliases.get(func.id, func.id), *parts]), node


def unsafe_loads(source: str, relative: str) -> list[str]:
    """Calls in `source` that could unpickle a file; numpy.load only with allow_pickle=True."""
    found = []
    for name, call in qualified_calls(ast.parse(source)):
        keywords = {k.arg: k.value for k in call.keywords}
        is_true = {key: isinstance(v, ast.Constant) and v.value is True for key, v in keywords.items()}
        if name == "numpy.load" and not is_true.get("allow_pickle", False):
            continue
        if name == "torch.load" and is_true.get("weights_only", False) and relative.startswith(ALLOWED_WEIGHTS_ONLY):
            continue
        if name in UNPICKLERS or name == "numpy.load":
            found.append(f"{relative}:{call.lineno}: {name}")
    return found


def test_no_package_module_can_unpickle_a_model_file() -> None:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found += unsafe_loads(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert found == []


@pytest.mark.parametrize(
    ("source", "where"),
    [
        ("import torch\ntorch.load(p)", "unet3d/x.py"),
        ("import torch\ntorch.load(p, weights_only=True)", "unet3d/x.py"),  # outside train/: refused all the same
        ("import torch\ntorch.load(p, weights_only=False)", "train/x.py"),
        ("from torch import load as fetch\nfetch(p)", "api/x.py"),
        ("import pickle as pk\npk.loads(b)", "space/x.py"),
        ("from pickle import Unpickler\nUnpickler(f).load()", "unet3d/x.py"),
        ("import numpy as np\nnp.load(p, allow_pickle=True)", "unet3d/x.py"),
        ("import joblib\njoblib.load(p)", "train/x.py"),
    ],
)
def test_the_scan_finds_each_way_of_unpickling(source: str, where: str) -> None:
    assert len(unsafe_loads(source, where)) == 1


@pytest.mark.parametrize(
    ("source", "where"),
    [
        ("import torch\ntorch.load(p, weights_only=True)", "train/trainer.py"),
        ("import numpy as np\nnp.load(p)", "unet3d/x.py"),
        ("# torch.load(p)\nx = 'pickle.loads'", "unet3d/x.py"),  # comments and strings are not calls
    ],
)
def test_the_scan_allows_safe_loads(source: str, where: str) -> None:
    assert unsafe_loads(source, where) == []


def test_api_key_is_compared_in_constant_time() -> None:
    tree = ast.parse((ROOT / "api" / "deps.py").read_text(encoding="utf-8"))
    names = {"key_matches", "require_api_key"}
    checks = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name in names]
    assert len(checks) == 2
    calls = {name for name, _ in qualified_calls(tree) if name.endswith("compare_digest")}
    assert calls & {"hmac.compare_digest", "secrets.compare_digest"}
    # No `==` / `!=` anywhere near the secret: an early-exit comparison leaks the key's prefix through timing.
    for check in checks:
        for node in ast.walk(check):
            if isinstance(node, ast.Compare) and any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
                assert "key" not in ast.unparse(node).lower(), ast.unparse(node)
    # The UI's login form goes through the same comparison.
    ui = ast.parse((ROOT / "api" / "ui" / "identity.py").read_text(encoding="utf-8"))
    assert "key_matches" in {name.split(".")[-1] for name, _ in qualified_calls(ui)}


@pytest.mark.parametrize(
    ("headers", "params"),
    [
        ({"X-API-Key": "s3cret-key-and-more"}, {}),
        ({"X-API-Key": "s3cret-ke"}, {}),
        ({"X-API-Key": "S3CRET-KEY"}, {}),
        ({"Authorization": "Bearer"}, {}),
        ({"Authorization": "Token s3cret-key"}, {}),
        ({}, {"api_key": "s3cret-key"}),  # never in the URL (it would end up in access logs)
        ({"X-API-Key": b"s3cret-key\xe9"}, {}),  # not ASCII (latin-1 on the wire)
    ],
)
def test_near_miss_keys_get_401_with_a_clean_body(strict_server, headers: dict, params: dict) -> None:
    answer = httpx.get(f"{strict_server.url}/v1/model", headers=headers, params=params)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert answer.json() == {
        "detail": "missing or wrong API key: send it as 'X-API-Key: <key>' or 'Authorization: Bearer <key>'"
    }


@pytest.mark.parametrize("path", ["/health", "/v1/model", "/ui/config", "/ui/", "/openapi.json"])
def test_a_foreign_origin_gets_no_cors_grant_on_a_deployed_host(tiny_server, path: str) -> None:
    # Gradio's own middleware granted any origin with credentials unless the Host was localhost (api/cors.py).
    headers = {"Origin": FOREIGN, "Host": "review.hospital.example"}
    simple = httpx.get(f"{tiny_server.url}{path}", headers=headers)
    preflight = httpx.options(f"{tiny_server.url}{path}", headers={**headers, "Access-Control-Request-Method": "POST"})
    for answer in (simple, preflight):
        assert "access-control-allow-origin" not in answer.headers
        assert "access-control-allow-credentials" not in answer.headers


def test_the_configured_origin_is_granted_on_the_ui_too_and_never_with_credentials(strict_server) -> None:
    for path in ("/v1/model", "/ui/config"):
        answer = httpx.get(f"{strict_server.url}{path}", headers={"Origin": "https://review.example.org"})
        assert answer.headers["access-control-allow-origin"] == "https://review.example.org"
        assert "access-control-allow-credentials" not in answer.headers
        refused = httpx.get(f"{strict_server.url}{path}", headers={"Origin": FOREIGN})
        assert "access-control-allow-origin" not in refused.headers


@pytest.fixture
def cors_client(monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """SettingsCORSMiddleware around a one-route app, with UNET3D_ALLOW_ORIGINS="*"."""
    monkeypatch.setenv("UNET3D_ALLOW_ORIGINS", "*")
    get_settings.cache_clear()
    app = Starlette(routes=[Route("/v1/model", lambda request: PlainTextResponse("ok"))])
    with TestClient(SettingsCORSMiddleware(app)) as client:
        yield client
    get_settings.cache_clear()


def test_a_wildcard_origin_setting_never_comes_with_credentials(cors_client: TestClient) -> None:
    simple = cors_client.get("/v1/model", headers={"Origin": FOREIGN, "Cookie": "session=1"})
    preflight = cors_client.options("/v1/model", headers={"Origin": FOREIGN, "Access-Control-Request-Method": "POST"})
    for answer in (simple, preflight):
        assert answer.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in answer.headers


@pytest.mark.parametrize(
    "target",
    ["/ui/gradio_api/file=/etc/passwd", "/ui/gradio_api/file=../../../../etc/passwd", "/ui/file=/etc/passwd",
     "/ui/gradio_api/file=" + str(ROOT / "models" / "unet3d-brain-tissue" / "config.json")],
)  # fmt: skip
def test_gradio_file_routes_serve_no_server_file(tiny_server, target: str) -> None:
    answer = httpx.get(f"{tiny_server.url}{target}")
    assert answer.status_code in (403, 404)
    assert "root:" not in answer.text and "base_channels" not in answer.text


def test_unknown_routes_and_methods_answer_without_internals(tiny_server) -> None:
    for answer in (
        httpx.get(f"{tiny_server.url}/v1/nothing"),
        httpx.delete(f"{tiny_server.url}/v1/predict"),
        httpx.post(f"{tiny_server.url}/health"),
    ):
        assert answer.status_code in (404, 405)
        assert "Traceback" not in answer.text and str(Path(ROOT)) not in answer.text
