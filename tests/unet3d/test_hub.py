"""Loading models from the Hub through a loopback FakeHub: cache, pinning, tags, tokens, errors, offline, pickles.

Every Hub client runs in a subprocess (huggingface_hub reads HF_ENDPOINT / HF_HUB_OFFLINE / HF_HOME at import),
with its cache in a temporary HF_HOME. The FakeHub is a real HTTP server; huggingface_hub is the real client.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import sys
from pathlib import Path

import pytest
import torch
from helpers import write_chained_model, write_tiny_model
from hubserver import FakeHub, hub_env, model_files, run, unet3d_command

from unet3d import ModelLoadError, Segmenter
from unet3d.hub import load_unet, resolve_source

TOKEN = "hf_acme_read_write"

# Loads each {"source", "revision"} spec given as JSON in argv[1] and prints one JSON list: the resolved source and a
# digest of the loaded parameters, or the unet3d error. Any other exception is a traceback and fails the test.
LOAD = r"""
import hashlib, json, sys, time
from unet3d import Segmenter, Unet3dError

def digest(model):
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()

results = []
for spec in json.loads(sys.argv[1]):
    start = time.perf_counter()
    try:
        seg = Segmenter.from_pretrained(spec["source"], spec.get("revision"), device="cpu")
        result = {**seg.source.as_dict(), "params": digest(seg.model)}
    except Unet3dError as e:
        result = {"error": type(e).__name__, "message": str(e)}
    results.append({**result, "seconds": time.perf_counter() - start})
print(json.dumps(results))
"""


def params_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Two tiny models with different weights (seeds 1 and 2)."""
    return {seed: write_tiny_model(tmp_path_factory.mktemp(f"tiny-seed{seed}"), seed=seed) for seed in (1, 2)}


@pytest.fixture(scope="module")
def expected(tiny_models: dict[int, Path]) -> dict[int, str]:
    """Parameter digest of each tiny model, loaded from its local directory."""
    return {seed: params_digest(load_unet(resolve_source(path))) for seed, path in tiny_models.items()}


@pytest.fixture
def hub():
    with FakeHub(tokens={TOKEN: "acme"}) as server:
        yield server


@pytest.fixture
def hf_home(tmp_path: Path) -> Path:
    return tmp_path / "hf-home"


def load(specs: list[dict], env: dict[str, str], cwd: Path) -> list[dict]:
    """Run LOAD in a fresh interpreter with `env`."""
    result = run([sys.executable, "-c", LOAD, json.dumps(specs)], env, cwd)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_cold_download_reports_commit_and_sha256_then_loads_offline_without_a_request(
    hub: FakeHub, hf_home: Path, tiny_models: dict[int, Path], tmp_path: Path
) -> None:
    files = model_files(tiny_models[1])
    sha = hub.add_commit("acme/tiny", files)

    cold = run(unet3d_command("info", "--model", "acme/tiny"), hub_env(hub.url, hf_home), tmp_path)
    assert cold.returncode == 0, cold.stderr
    info = json.loads(cold.stdout)
    assert (info["id"], info["revision"], info["sha256"]) == ("acme/tiny", sha, sha256(files["model.safetensors"]))
    assert info["name"] == "tiny-test"  # the card travels with the weights
    downloaded = {r.path.rsplit("/", 1)[-1] for r in hub.requests("GET", "/resolve/")}
    assert downloaded == set(files)  # only the model files; never .gitattributes or anything else

    hub.clear_log()
    offline = hub_env(hub.url, hf_home, offline=True)
    for revision in ([], ["--revision", sha]):
        warm = run(unet3d_command("info", "--model", "acme/tiny", *revision), offline, tmp_path)
        assert warm.returncode == 0, warm.stderr
        assert json.loads(warm.stdout) == info
    assert hub.log == []


@pytest.mark.slow
def test_a_chained_model_downloads_its_brain_mask_stage_at_the_same_commit(
    hub: FakeHub, hf_home: Path, tmp_path: Path
) -> None:
    files = model_files(write_chained_model(tmp_path / "chained"))
    assert "brain_mask/model.safetensors" in files
    sha = hub.add_commit("acme/chained", files)
    result = run(unet3d_command("info", "--model", "acme/chained"), hub_env(hub.url, hf_home), tmp_path)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert (info["revision"], info["inference"]["brain_mask"]) == (sha, True)
    assert info["brain_mask_sha256"] == sha256(files["brain_mask/model.safetensors"])
    downloaded = {r.path.split("/resolve/", 1)[-1].split("/", 1)[-1] for r in hub.requests("GET", "/resolve/")}
    assert downloaded == set(files)


@pytest.mark.slow
def test_pinned_commit_and_tag_keep_old_weights_after_main_moves(
    hub: FakeHub, hf_home: Path, tiny_models: dict[int, Path], expected: dict[int, str], tmp_path: Path
) -> None:
    old = hub.add_commit("acme/tiny", model_files(tiny_models[1]), message="v1")
    hub.add_tag("acme/tiny", "v1.0")
    env = hub_env(hub.url, hf_home)
    [first] = load([{"source": "acme/tiny"}], env, tmp_path)
    assert (first["revision"], first["params"]) == (old, expected[1])

    new = hub.add_commit("acme/tiny", model_files(tiny_models[2]), message="v2")
    hub.clear_log()
    main, pinned, tagged = load(
        [
            {"source": "acme/tiny"},
            {"source": "acme/tiny", "revision": old},
            {"source": "acme/tiny", "revision": "v1.0"},
        ],
        env,
        tmp_path,
    )
    assert (main["revision"], main["params"]) == (new, expected[2])
    assert (pinned["revision"], pinned["params"]) == (old, expected[1])
    assert (tagged["revision"], tagged["params"]) == (old, expected[1])
    assert tagged["sha256"] == sha256((tiny_models[1] / "model.safetensors").read_bytes())
    # The pinned commit was in the cache: resolving it made no request for it.
    assert not hub.requests(contains=f"/{old}/")


@pytest.mark.slow
def test_private_repo_needs_hf_token(hub: FakeHub, hf_home: Path, tiny_models: dict[int, Path], tmp_path: Path) -> None:
    sha = hub.add_commit("acme/secret", model_files(tiny_models[1]), private=True)

    for token in (None, "hf_wrong"):
        denied = run(unet3d_command("info", "--model", "acme/secret"), hub_env(hub.url, hf_home, token=token), tmp_path)
        assert denied.returncode == 1
        assert "Hub repo 'acme/secret' was not found (or is private: set HF_TOKEN" in denied.stderr
        assert "Traceback" not in denied.stderr

    hub.clear_log()
    allowed = run(unet3d_command("info", "--model", "acme/secret"), hub_env(hub.url, hf_home, token=TOKEN), tmp_path)
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout)["revision"] == sha
    assert hub.log and all(r.authorization == f"Bearer {TOKEN}" for r in hub.log)


@pytest.mark.slow
def test_unknown_repo_revision_or_missing_file_give_clear_errors(
    hub: FakeHub, hf_home: Path, tiny_models: dict[int, Path], tmp_path: Path
) -> None:
    files = model_files(tiny_models[1])
    hub.add_commit("acme/tiny", files)
    hub.add_commit("acme/no-card", {k: v for k, v in files.items() if k != "model.yaml"})
    specs = [
        {"source": "acme/missing"},
        {"source": "acme/tiny", "revision": "no-such-branch"},
        {"source": "acme/tiny", "revision": "0" * 40},
        {"source": "acme/no-card"},
    ]
    results = load(specs, hub_env(hub.url, hf_home), tmp_path)
    messages = [r.get("message", "") for r in results]
    assert all(r.get("error") == "ModelLoadError" for r in results), results
    assert "Hub repo 'acme/missing' was not found" in messages[0]
    assert "revision 'no-such-branch' does not exist in Hub repo 'acme/tiny'" in messages[1]
    assert f"revision '{'0' * 40}' does not exist in Hub repo 'acme/tiny'" in messages[2]
    assert "has no model.yaml: it is not a unet3d model" in messages[3]
    assert all(r["seconds"] < 5 for r in results), results  # errors, not retries
    cli = run(unet3d_command("info", "--model", "acme/missing"), hub_env(hub.url, hf_home), tmp_path)
    assert cli.returncode == 1
    assert cli.stderr.strip().splitlines()[-1].startswith("unet3d: error: Hub repo 'acme/missing' was not found")
    assert cli.stderr.strip().endswith(f"(nor is there a folder 'acme/missing' in {tmp_path})")
    (tmp_path / "models" / "brain").mkdir(parents=True)  # a typo in a local path: the local reading comes first
    typo = run(unet3d_command("info", "--model", "models/brian"), hub_env(hub.url, hf_home), tmp_path)
    assert (
        typo.stderr.strip()
        .splitlines()[-1]
        .startswith(
            f"unet3d: error: there is no model folder 'models/brian' in {tmp_path} ('models' holds: brain); as a Hub"
        )
    )


@pytest.mark.slow
def test_hub_going_away_keeps_cached_loads_and_fails_fast_for_the_rest(
    hub: FakeHub, hf_home: Path, tiny_models: dict[int, Path], expected: dict[int, str], tmp_path: Path
) -> None:
    sha = hub.add_commit("acme/tiny", model_files(tiny_models[1]))
    other = hub.add_commit("acme/other", model_files(tiny_models[2]))
    env = hub_env(hub.url, hf_home)
    load([{"source": "acme/tiny"}], env, tmp_path)  # fills the cache: refs/main and snapshots/<sha>
    hub.stop()  # the Hub goes away; HF_HUB_OFFLINE is *not* set

    pinned, main, uncached, uncached_pinned = load(
        [
            {"source": "acme/tiny", "revision": sha},
            {"source": "acme/tiny"},
            {"source": "acme/other"},
            {"source": "acme/other", "revision": other},
        ],
        env,
        tmp_path,
    )
    assert (pinned["revision"], pinned["params"]) == (sha, expected[1])
    assert (main["revision"], main["params"]) == (sha, expected[1])
    for failed in (uncached, uncached_pinned):
        assert failed["error"] == "ModelLoadError"
        assert "not in the local cache and the Hub is offline or unreachable" in failed["message"]
        assert failed["seconds"] < 2
    assert "pin a commit sha in UNET3D_MODEL_REVISION (the CLI's --revision" in uncached["message"]
    assert "and pre-fetch it with `hf download acme/other --revision <sha>`" in uncached["message"]
    assert f"pre-fetch it with `hf download acme/other --revision {other}` while online" in uncached_pinned["message"]


@pytest.mark.slow
def test_offline_mode_with_an_empty_cache_fails_fast_with_the_pin_and_prefetch_advice(
    hub: FakeHub, hf_home: Path, tmp_path: Path
) -> None:
    [result] = load([{"source": "acme/tiny", "revision": "1" * 40}], hub_env(hub.url, hf_home, offline=True), tmp_path)
    assert result["error"] == "ModelLoadError"
    assert f"hf download acme/tiny --revision {'1' * 40}" in result["message"]
    assert result["seconds"] < 2
    assert hub.log == []
    [branch] = load([{"source": "acme/tiny"}], hub_env(hub.url, hf_home, offline=True), tmp_path)
    assert "pin a commit sha in UNET3D_MODEL_REVISION" in branch["message"]


class _Payload:
    """Unpickling this creates `marker`: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def malicious_pickle(marker: Path) -> bytes:
    return pickle.dumps(_Payload(marker))


def test_malicious_pickle_payload_is_real(tmp_path: Path) -> None:
    # The control: this payload does run when unpickled, so its absence below means "never unpickled".
    pickle.loads(malicious_pickle(tmp_path / "control")).close()
    assert (tmp_path / "control").exists()


@pytest.mark.parametrize("name", ["model.pt", "pytorch_model.bin", "model.pth"])
def test_local_pickle_checkpoints_are_refused_and_never_unpickled(
    name: str, tiny_models: dict[int, Path], tmp_path: Path
) -> None:
    marker = tmp_path / "executed"
    directory = tmp_path / "pickled"
    directory.mkdir()
    for keep in ("config.json", "model.yaml", "README.md"):
        (directory / keep).write_bytes((tiny_models[1] / keep).read_bytes())
    (directory / name).write_bytes(malicious_pickle(marker))

    for source in (directory, directory / name):
        with pytest.raises(ModelLoadError, match=f"refusing to load '{name}': pickled checkpoints"):
            Segmenter.from_pretrained(source, device="cpu")
    (directory / "model.safetensors").write_bytes(malicious_pickle(marker))  # a pickle in disguise
    with pytest.raises(ModelLoadError, match="not a valid safetensors file"):
        Segmenter.from_pretrained(directory, device="cpu")
    assert not marker.exists()


def test_hub_repo_with_only_a_pickle_is_refused_without_downloading_it(
    hub: FakeHub, hf_home: Path, tiny_models: dict[int, Path], tmp_path: Path
) -> None:
    marker = tmp_path / "executed"
    files = {k: v for k, v in model_files(tiny_models[1]).items() if k != "model.safetensors"}
    hub.add_commit("acme/pickled", {**files, "pytorch_model.bin": malicious_pickle(marker)})
    [result] = load([{"source": "acme/pickled"}], hub_env(hub.url, hf_home), tmp_path)
    assert result["error"] == "ModelLoadError"
    assert "has no model.safetensors" in result["message"]
    assert not hub.requests(contains="pytorch_model.bin")
    assert not marker.exists()
