"""`unet3d push` and `python -m train push` (one implementation): refusals, and real uploads to a loopback FakeHub."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from helpers import write_tiny_model
from hubserver import FakeHub, hub_env, run, unet3d_command

from unet3d.cli import main as unet3d_main
from unet3d.hub import MODEL_FILES

TOKEN = "hf_acme_write"


def _drop(name: str) -> Callable[[Path], None]:
    return lambda directory: (directory / name).unlink()


def _four_classes(directory: Path) -> None:
    card = yaml.safe_load((directory / "model.yaml").read_text(encoding="utf-8"))
    card["classes"].append({"name": "extra", "color": "#0000ff"})
    (directory / "model.yaml").write_text(yaml.safe_dump(card), encoding="utf-8")


def _corrupt_weights(directory: Path) -> None:
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def _other_architecture(directory: Path) -> None:
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "base_channels": 8}))


BROKEN = {
    "missing README.md": (_drop("README.md"), "lacks README.md"),
    "missing model.yaml": (_drop("model.yaml"), "lacks model.yaml"),
    "missing weights": (_drop("model.safetensors"), "lacks model.safetensors"),
    "card with 4 classes for 3 outputs": (_four_classes, "model.yaml lists 4 classes but the network has 3 outputs"),
    "truncated safetensors": (_corrupt_weights, "is not a valid safetensors file"),
    "weights for another architecture": (_other_architecture, "do not match its config.json"),
}


def train_main(argv: list[str]) -> int:
    from train.__main__ import main

    return main(argv)


@pytest.mark.parametrize("case", list(BROKEN))
@pytest.mark.parametrize("command", ["unet3d push", "python -m train push"])
def test_push_refuses_an_incomplete_or_inconsistent_directory(
    case: str, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    break_it, message = BROKEN[case]
    directory = write_tiny_model(tmp_path / "model")
    break_it(directory)
    if command == "unet3d push":
        code = unet3d_main(["push", str(directory), "acme/tiny"])
    else:
        code = train_main(["push", "--model", str(directory), "--repo-id", "acme/tiny"])
    assert code == 1
    assert message in capsys.readouterr().err


@pytest.fixture
def hub():
    with FakeHub(tokens={TOKEN: "acme"}) as server:
        yield server


def test_refused_directory_sends_no_request_to_the_hub(hub: FakeHub, tmp_path: Path) -> None:
    directory = write_tiny_model(tmp_path / "model")
    _four_classes(directory)
    env = hub_env(hub.url, tmp_path / "hf-home", token=TOKEN)
    result = run(unet3d_command("push", str(directory), "acme/tiny"), env, tmp_path)
    assert result.returncode == 1
    assert "inconsistent with the weights" in result.stderr
    assert hub.log == []


@pytest.mark.slow
def test_unet3d_push_uploads_the_four_files_and_they_download_back(hub: FakeHub, tmp_path: Path) -> None:
    directory = write_tiny_model(tmp_path / "model", seed=3)
    (directory / "notes.txt").write_text("not part of a model")
    env = hub_env(hub.url, tmp_path / "hf-home", token=TOKEN)

    pushed = run(unet3d_command("push", str(directory), "acme/tiny"), env, tmp_path)
    assert pushed.returncode == 0, pushed.stderr
    commit = json.loads(pushed.stdout)["commit"]
    files = hub.files("acme/tiny", commit)
    assert set(files) == {".gitattributes", *MODEL_FILES}
    assert all(files[name] == (directory / name).read_bytes() for name in MODEL_FILES)
    assert [(r.method, r.path) for r in hub.requests("POST")] == [
        ("POST", "/api/repos/create"),
        ("POST", "/api/validate-yaml"),
        ("POST", "/api/models/acme/tiny/preupload/main"),
        ("POST", "/api/models/acme/tiny/commit/main"),
    ]
    assert all(r.authorization == f"Bearer {TOKEN}" for r in hub.log)

    info = run(unet3d_command("info", "--model", "acme/tiny", "--revision", commit), env, tmp_path)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["revision"] == commit

    again = run(unet3d_command("push", str(directory), "acme/tiny"), env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["commit"] == commit  # nothing changed: no new commit


@pytest.mark.slow
def test_train_push_to_a_private_branch(hub: FakeHub, tmp_path: Path) -> None:
    directory = write_tiny_model(tmp_path / "model", seed=4)
    env = hub_env(hub.url, tmp_path / "hf-home", token=TOKEN)
    command = [sys.executable, "-m", "train", "push", "--model", str(directory), "--repo-id", "acme/trained"]
    pushed = run([*command, "--revision", "candidate", "--private"], env, Path.cwd())
    assert pushed.returncode == 0, pushed.stderr
    commit = json.loads(pushed.stdout.strip().splitlines()[-1])["commit"]

    repo = hub.repos[("model", "acme/trained")]
    assert repo.private
    assert repo.branches["candidate"] == commit
    assert set(hub.files("acme/trained", "candidate")) == {".gitattributes", *MODEL_FILES}
    assert set(hub.files("acme/trained", "main")) == {".gitattributes"}

    anonymous = hub_env(hub.url, tmp_path / "anonymous-home")
    denied = run(unet3d_command("info", "--model", "acme/trained", "--revision", "candidate"), anonymous, tmp_path)
    assert denied.returncode == 1
    assert "or is private: set HF_TOKEN" in denied.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("token", "message"),
    [(None, "401 Unauthorized"), ("hf_unknown", "401 Unauthorized"), (TOKEN, "403 Forbidden")],
    ids=["no-token", "bad", "not-owner"],
)
def test_push_without_write_access_fails_with_a_one_line_error(
    hub: FakeHub, tmp_path: Path, token: str | None, message: str
) -> None:
    directory = write_tiny_model(tmp_path / "model")
    repo_id = "other-org/tiny" if token == TOKEN else "acme/tiny"
    env = hub_env(hub.url, tmp_path / "hf-home", token=token)
    result = run(unet3d_command("push", str(directory), repo_id), env, tmp_path)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"unet3d: error: upload to '{repo_id}' failed:")
    assert message in last
    assert "Traceback" not in result.stderr
    assert ("model", repo_id) not in hub.repos
