"""`python -m space.publish`: the assembled Space folder, its card, its upload, and the app started from it."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from helpers import ROOT, TINY_CARD, write_tiny_model
from hubserver import FakeHub, get_json, hub_env, run, uvicorn_service

from space.publish import (
    FILES,
    FOLDERS,
    PUBLIC_SETTINGS,
    SHIPPED_MODEL,
    PublishError,
    assemble,
    check_card,
    dockerfile_port,
    read_card,
)
from space.publish import main as publish_main

TOKEN = "hf_acme_write"


def source_files() -> set[str]:
    """What the Space must hold, listed from the source tree independently of space.publish."""
    expected = {*FILES, "README.md"}
    for folder in (*FOLDERS, SHIPPED_MODEL):
        for path in (ROOT / folder).rglob("*"):
            relative = path.relative_to(ROOT)
            skipped = {"__pycache__", "node_modules"} & set(relative.parts)  # node_modules: NiiVue, installed by npm
            if path.is_file() and not skipped and path.suffix != ".pyc":
                expected.add(str(relative))
    return expected


@pytest.fixture(scope="module")
def space_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("space") / "acme-unet3d"
    result = subprocess.run(
        [sys.executable, "-m", "space.publish", "--repo-id", "acme/unet3d", "--dry-run", str(target)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["folder"] == str(target)
    return target


def test_dry_run_folder_holds_exactly_the_space_files(space_dir: Path) -> None:
    files = {str(p.relative_to(space_dir)) for p in space_dir.rglob("*") if p.is_file()}
    assert files == source_files()
    assert {"Dockerfile", "README.md", "requirements.txt", "models/unet3d-brain-tissue/model.safetensors"} <= files
    assert not {f for f in files if f.startswith(("tests/", "train/", "data/", "bench/", "wheels/", ".venv/"))}
    assert (space_dir / "Dockerfile").read_bytes() == (ROOT / "Dockerfile").read_bytes()
    assert (space_dir / "README.md").read_bytes() == (ROOT / "space" / "README.md").read_bytes()
    weights = "models/unet3d-brain-tissue/model.safetensors"
    assert (space_dir / weights).read_bytes() == (ROOT / weights).read_bytes()


def test_every_path_the_dockerfile_copies_is_in_the_space() -> None:
    copied = set()
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and "wheel[s]" not in line:
            sources = [word for word in line.split()[1:-1] if not word.startswith("--")]
            copied.update(sources)
    assert copied
    assert copied <= {*FILES, *FOLDERS, "models"}


def test_space_card_front_matter_parses_and_app_port_matches_the_dockerfile(space_dir: Path) -> None:
    card = read_card(space_dir / "README.md")
    assert card["sdk"] == "docker"
    assert card["app_port"] == dockerfile_port(space_dir / "Dockerfile") == 8000
    assert card["models"] == ["unet3d/unet3d-brain-tissue"]
    assert {"title", "emoji", "colorFrom", "colorTo", "license", "short_description"} <= set(card)
    assert len(card["short_description"]) <= 60  # the Hub's limit
    body = (space_dir / "README.md").read_text().lower()
    assert "not for clinical use" in body and "nifti" in body


def test_a_card_that_disagrees_with_the_dockerfile_is_refused(tmp_path: Path) -> None:
    card = read_card()
    with pytest.raises(PublishError, match="app_port 7860 but the Dockerfile listens on 8000"):
        check_card({**card, "app_port": 7860}, 8000)
    with pytest.raises(PublishError, match="sdk: docker"):
        check_card({**card, "sdk": "gradio"}, 8000)
    bad = tmp_path / "README.md"
    bad.write_text("# no front matter\n")
    with pytest.raises(PublishError, match="no YAML front matter"):
        assemble(tmp_path / "out", card=bad)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    with pytest.raises(PublishError, match="is not empty"):
        assemble(tmp_path / "busy")


@pytest.mark.slow
def test_publish_creates_a_docker_space_and_mirrors_the_folder(tmp_path: Path) -> None:
    with FakeHub(tokens={TOKEN: "acme"}) as hub:
        hub.add_commit("acme/unet3d", {"stale.py": b"old"}, repo_type="space")
        hub.repos[("space", "acme/unet3d")].variables["UNET3D_MODEL"] = "acme/older-model"  # from an earlier publish
        env = hub_env(hub.url, tmp_path / "hf-home", token=TOKEN)
        command = [sys.executable, "-m", "space.publish", "--repo-id", "acme/unet3d", "--private"]
        result = run(command, env, ROOT, timeout=300)
        assert result.returncode == 0, result.stderr
        commit = json.loads(result.stdout.strip().splitlines()[-1])["commit"]
        files = hub.files("acme/unet3d", commit, repo_type="space")
    assert set(files) == {".gitattributes", *source_files()}  # stale.py deleted
    assert files["Dockerfile"] == (ROOT / "Dockerfile").read_bytes()
    assert files["README.md"] == (ROOT / "space" / "README.md").read_bytes()
    # the shipped model needs no variable; the limits of a public service are on
    assert hub.repos[("space", "acme/unet3d")].variables == PUBLIC_SETTINGS


def publish(*arguments: str) -> subprocess.CompletedProcess[str]:
    """`python -m space.publish ARGS` run in this process, from the repository root (a process start costs seconds).

    Only runs that reach the Hub need their own process: huggingface_hub reads HF_ENDPOINT when it is imported.
    """
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(ROOT), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = publish_main(list(arguments))
    return subprocess.CompletedProcess(["space.publish", *arguments], code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def own_model_space(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A dry-run Space for a model of one's own (a trained model directory, here a tiny one)."""
    folder = tmp_path_factory.mktemp("own")
    model = write_tiny_model(folder / "run" / "model", card={**TINY_CARD, "description": "Shells. And cores."})
    (model / "README.md").write_text("# tiny\n")
    result = publish("--repo-id", "acme/tiny-seg", "--model", str(model), "--dry-run", str(folder / "space"))
    assert result.returncode == 0, result.stderr
    return folder / "space", json.loads(result.stdout)


def test_a_space_for_ones_own_model_holds_that_model_and_names_it(own_model_space) -> None:
    space, answer = own_model_space
    assert answer["variables"] == {"UNET3D_MODEL": "models/tiny-test", **PUBLIC_SETTINGS}
    assert "models/tiny-test/model.safetensors" in answer["files"]
    assert not [f for f in answer["files"] if f.startswith(SHIPPED_MODEL)]
    card = read_card(space / "README.md")
    check_card({**card, "models": ["-"]}, 8000)  # a Docker Space card on the image's port
    assert card["title"] == "tiny-test" and card["short_description"] == "Shells" and "models" not in card
    body = (space / "README.md").read_text()
    assert "0 background, 1 shell, 2 core" in body and "Not for clinical use" in body and "brain" not in body.lower()


def test_a_space_for_a_hub_model_pins_it_with_variables(tmp_path: Path) -> None:
    result = publish("--repo-id", "acme/seg", "--model", "acme/seg-model", "--revision", "a" * 40,
                     "--dry-run", str(tmp_path / "space"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    pinned = {"UNET3D_MODEL": "acme/seg-model", "UNET3D_MODEL_REVISION": "a" * 40}
    assert answer["variables"] == {**pinned, **PUBLIC_SETTINGS}
    assert [f for f in answer["files"] if f.startswith("models/")] == ["models/README.md"]
    assert read_card(tmp_path / "space" / "README.md")["models"] == ["acme/seg-model"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--repo-id", "acme/my--seg"], "--repo-id 'acme/my--seg' is not a valid Hub repo id"),
        (["--repo-id", "acme/.."], "--repo-id 'acme/..' is not a valid Hub repo id"),
        (["--repo-id", "unet3d"], "--repo-id must look like OWNER/NAME, got 'unet3d'"),
        (["--repo-id", "acme/x", "--dry-run", "README.md"], "'README.md' is a file, not a folder"),
        (["--repo-id", "acme/x", "--revision", "main", "--dry-run", "{new}"], "--revision goes with a Hub --model"),
        (["--repo-id", "acme/x", "--model", "tests", "--dry-run", "{new}"], "--model: model directory 'tests' lacks"),
    ],
)
def test_mistakes_end_in_one_line_before_anything_is_written(arguments, message, tmp_path: Path) -> None:
    result = publish(*(argument.format(new=tmp_path / "space") for argument in arguments))
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("space.publish: error: ") and message in line
    assert not (tmp_path / "space").exists()


@pytest.mark.slow
def test_publishing_ones_own_model_sets_the_space_variable_first(own_model_space, tmp_path: Path) -> None:
    model = own_model_space[0].parent / "run" / "model"
    with FakeHub(tokens={TOKEN: "acme"}) as hub:
        env = hub_env(hub.url, tmp_path / "hf-home", token=TOKEN)
        result = run([sys.executable, "-m", "space.publish", "--repo-id", "acme/tiny-seg", "--model", str(model)],
                     env, ROOT, timeout=300)  # fmt: skip
        assert result.returncode == 0, result.stderr
        repo = hub.repos[("space", "acme/tiny-seg")]
        writes = [r.path for r in hub.requests("POST") if "/variables" in r.path or "/commit/" in r.path]
    assert repo.variables == {"UNET3D_MODEL": "models/tiny-test", **PUBLIC_SETTINGS}
    assert writes[0].endswith("/variables") and writes[-1].endswith("/commit/main")
    assert "models/tiny-test/model.safetensors" in hub.files("acme/tiny-seg", repo_type="space")


@pytest.mark.slow
def test_publish_without_a_token_fails_with_one_line(tmp_path: Path) -> None:
    with FakeHub(tokens={TOKEN: "acme"}) as hub:
        env = hub_env(hub.url, tmp_path / "hf-home")
        result = run([sys.executable, "-m", "space.publish", "--repo-id", "acme/unet3d"], env, ROOT)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("space.publish: error: upload to 'acme/unet3d' failed:")


@pytest.mark.slow
def test_the_app_in_a_space_for_ones_own_model_serves_that_model(own_model_space, tmp_path: Path) -> None:
    space, answer = own_model_space
    env = hub_env("http://127.0.0.1:9", tmp_path / "hf-home", offline=True, GRADIO_TEMP_DIR=str(tmp_path / "gradio"))
    with uvicorn_service({**env, **answer["variables"]}, space) as url:  # what the Space's variables do
        health = get_json(f"{url}/health")
    assert health["model"] == {"id": "models/tiny-test", "revision": "local"}


@pytest.mark.slow
def test_the_app_started_from_the_space_folder_serves_health_and_ui(space_dir: Path, tmp_path: Path) -> None:
    env = hub_env("http://127.0.0.1:9", tmp_path / "hf-home", offline=True, GRADIO_TEMP_DIR=str(tmp_path / "gradio"))
    with uvicorn_service(env, space_dir) as url:
        health = get_json(f"{url}/health")
        with urllib.request.urlopen(f"{url}/ui/", timeout=30) as response:
            ui_status, ui_page = response.status, response.read().decode()
    assert health["status"] == "ok" and health["model_loaded"] is True
    # The server ran in the Space folder: the default model resolved to the folder's own copy.
    assert health["model"]["id"] == "models/unet3d-brain-tissue"
    assert (space_dir / health["model"]["id"] / "model.safetensors").is_file()
    assert ui_status == 200 and "gradio" in ui_page.lower()
