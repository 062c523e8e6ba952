"""Resolve a model source (local folder, .safetensors file, Hub repo id) to a verified local model directory."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors import SafetensorError
from safetensors.torch import load_model

from .card import ModelCard, load_card
from .errors import CardError, ModelLoadError
from .model import UNet3D

__all__ = [
    "BRAIN_MASK_DIR",
    "BRAIN_MASK_FILES",
    "CARD_NAME",
    "MODEL_FILES",
    "ModelSource",
    "brain_mask_source",
    "check_model_dir",
    "default_model",
    "load_unet",
    "model_info",
    "push_model",
    "resolve_source",
]

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "model.yaml"
README_NAME = "README.md"
MODEL_FILES = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME, README_NAME)
# A chained model's first stage (the card's `inference.brain_mask: true`): a whole model directory of its own, a
# brain-extraction network whose mask the main model's input and output are restricted to.
BRAIN_MASK_DIR = "brain_mask"
BRAIN_MASK_FILES = tuple(f"{BRAIN_MASK_DIR}/{name}" for name in (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME))
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")
_SHA = re.compile(r"^[0-9a-f]{40}$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelSource:
    """Where a model came from and exactly which bytes were loaded.

    Attributes:
        id: the repo id, or the local path as given.
        revision: the resolved commit sha for Hub models, "local" for local files.
        directory: local folder holding config.json, model.safetensors and model.yaml.
        weights: the safetensors file that was loaded.
        sha256: hex digest of the weights file.
    """

    id: str
    revision: str
    directory: Path
    weights: Path
    sha256: str

    def as_dict(self) -> dict[str, str]:
        """`{"id", "revision", "sha256"}`: what /health, /v1/model and `unet3d info` report."""
        return {"id": self.id, "revision": self.revision, "sha256": self.sha256}


def resolve_source(source: str | Path, revision: str | None = None, *, token: str | None = None) -> ModelSource:
    """Find the model files for `source`, downloading them from the Hub if needed.

    Args:
        source: a local model directory, a `.safetensors` file (config.json and model.yaml beside it),
            or a Hub repo id `owner/name`.
        revision: branch, tag or commit sha (Hub only); a 40-hex sha is reproducible and, once cached,
            needs no network.
        token: Hub token; defaults to `HF_TOKEN` / the stored login.

    Raises:
        ModelLoadError: the source does not exist, holds a pickle instead of safetensors, or the Hub
            refused or could not be reached (the message says what to do).
    """
    text = str(source)
    path = Path(text).expanduser()
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ModelLoadError(_pickle_message(path.name))
    if path.exists():
        return _local_source(path, text)
    if text.endswith(".safetensors") or text.startswith((".", "/", "~")) or not _REPO_ID.match(text):
        raise ModelLoadError(f"model path '{text}' does not exist (and is not a Hub repo id like 'owner/name')")
    try:
        return _hub_source(text, revision, token)
    except ModelLoadError as e:  # a relative folder path looks like a repo id: say both readings failed
        raise ModelLoadError(_both_readings_failed(path, e)) from e


def _both_readings_failed(path: Path, hub_error: ModelLoadError) -> str:
    """A source that is neither a local folder nor a Hub repo: the likelier reading first (a path whose parent
    folder exists here, like models/typo, was meant as a folder)."""
    where = f"there is no model folder '{path}' in {Path.cwd()}"
    if not path.parent.is_dir():
        return f"{hub_error} (nor is there a folder '{path}' in {Path.cwd()})"
    folders = sorted(p.name for p in path.parent.iterdir() if p.is_dir() and not p.name.startswith("."))
    shown = ", ".join(folders[:6]) + (", ..." if len(folders) > 6 else "")
    return f"{where} ('{path.parent}' holds: {shown or 'no folders'}); as a Hub repo id: {hub_error}"


def _local_source(path: Path, label: str) -> ModelSource:
    if path.is_file():
        if path.suffix != ".safetensors":
            raise ModelLoadError(f"'{path.name}' is not a .safetensors weights file")
        directory, weights = path.parent, path
    else:
        directory, weights = path, path / WEIGHTS_NAME
        if not weights.exists():
            pickles = sorted(p.name for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
            if pickles:
                raise ModelLoadError(_pickle_message(pickles[0]))
            raise ModelLoadError(f"no {WEIGHTS_NAME} in model directory '{label}'")
    for required in (CONFIG_NAME, CARD_NAME):
        if not (directory / required).exists():
            raise ModelLoadError(f"'{required}' is missing next to the weights in '{label}'")
    return ModelSource(label, "local", directory, weights, file_sha256(weights))


def _hub_source(repo_id: str, revision: str | None, token: str | None) -> ModelSource:
    pinned = revision is not None and _SHA.match(revision) is not None
    offline = constants.HF_HUB_OFFLINE
    if not offline and not pinned and not _endpoint_reachable():
        logger.warning("Hub endpoint %s unreachable; trying the local cache", constants.ENDPOINT)
        offline = True
    try:
        directory = _download(repo_id, revision, token, local_only=offline or pinned)
    except LocalEntryNotFoundError as e:
        if offline or not _endpoint_reachable():
            advice = (
                f"pre-fetch it with `hf download {repo_id} --revision {revision}` while online"
                if pinned
                else "pin a commit sha in UNET3D_MODEL_REVISION (the CLI's --revision, the API's revision=) and "
                f"pre-fetch it with `hf download {repo_id} --revision <sha>` while online"
            )
            raise ModelLoadError(
                f"model '{repo_id}' (revision {revision or 'main'}) is not in the local cache and the Hub is "
                f"offline or unreachable: {advice}"
            ) from e
        directory = _download(repo_id, revision, token, local_only=False)
    commit = directory.name if _SHA.match(directory.name) else (revision or "unknown")
    weights = directory / WEIGHTS_NAME
    for required in (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME):
        if not (directory / required).exists():
            raise ModelLoadError(f"Hub repo '{repo_id}' at {commit[:12]} has no {required}: it is not a unet3d model")
    return ModelSource(repo_id, commit, directory, weights, file_sha256(weights))


def _download(repo_id: str, revision: str | None, token: str | None, *, local_only: bool) -> Path:
    try:
        return Path(
            snapshot_download(
                repo_id,
                revision=revision,
                allow_patterns=[*MODEL_FILES, *BRAIN_MASK_FILES],
                token=token,
                local_files_only=local_only,
            )
        )
    except LocalEntryNotFoundError as e:
        if local_only:
            raise
        # Online, yet nothing usable came back (e.g. the Hub answered 5xx and nothing is cached).
        raise ModelLoadError(f"could not download '{repo_id}' from the Hub: {str(e).splitlines()[0]}") from e
    except GatedRepoError as e:
        raise ModelLoadError(f"Hub repo '{repo_id}' is gated: accept its terms on the Hub and set HF_TOKEN") from e
    except RepositoryNotFoundError as e:
        raise ModelLoadError(
            f"Hub repo '{repo_id}' was not found (or is private: set HF_TOKEN to a token that can read it)"
        ) from e
    except RevisionNotFoundError as e:
        raise ModelLoadError(f"revision '{revision}' does not exist in Hub repo '{repo_id}'") from e
    except EntryNotFoundError as e:
        raise ModelLoadError(f"a model file is missing from Hub repo '{repo_id}': {e}") from e
    except (HfHubHTTPError, HFValidationError, OSError) as e:
        raise ModelLoadError(f"could not download '{repo_id}' from the Hub: {str(e).splitlines()[0]}") from e


def _endpoint_reachable(timeout_s: float = 2.0) -> bool:
    """One TCP connect to the Hub endpoint, so an unreachable Hub fails in seconds, not in retries."""
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _pickle_message(name: str) -> str:
    return (
        f"refusing to load '{name}': pickled checkpoints can run arbitrary code and are never loaded. "
        "Convert it once, in a trusted environment, with `UNet3D(...).load_state_dict(state)` and "
        "`save_pretrained(DIR)`, then load DIR (config.json + model.safetensors + model.yaml)"
    )


def default_model() -> str:
    """The shipped model directory: `models/unet3d-brain-tissue`, relative when run from the source tree's root."""
    relative = Path("models") / "unet3d-brain-tissue"
    bundled = Path(__file__).resolve().parent.parent / relative
    if relative.exists() or not bundled.exists():
        return str(relative)
    return str(bundled)


def check_model_dir(directory: str | Path) -> list[str]:
    """Verify a model directory is complete and self-consistent before it is published.

    Returns:
        The file names to upload.

    Raises:
        ModelLoadError: a file is missing, the weights do not load strictly into config.json's
            architecture, or model.yaml's classes disagree with the network.
    """
    path = Path(directory)
    if not path.is_dir():
        raise ModelLoadError(f"model directory '{directory}' does not exist")
    missing = [name for name in MODEL_FILES if not (path / name).is_file()]
    if missing:
        raise ModelLoadError(f"model directory '{directory}' lacks {', '.join(missing)}")
    source = _local_source(path, str(directory))
    try:
        model = load_unet(source)
        card = load_card(path / CARD_NAME)
        card.check_network(model.num_classes, model.in_channels, model.pad_multiple)
        if card.inference.brain_mask:
            part = brain_mask_source(source)
            mask_model = load_unet(part)
            load_card(part.directory / CARD_NAME).check_network(2, mask_model.in_channels, mask_model.pad_multiple)
    except CardError as e:
        raise ModelLoadError(f"model.yaml in '{directory}' is inconsistent with the weights: {e}") from e
    return [*MODEL_FILES, *(BRAIN_MASK_FILES if card.inference.brain_mask else ())]


def model_info(source: ModelSource, card: ModelCard, brain_mask: ModelSource | None = None) -> dict[str, Any]:
    """The card plus the resolved id, revision and weights sha256 (a chained model's first stage's too: from
    `brain_mask` when it is loaded already), as `unet3d info` and `Segmenter.info` report them."""
    info: dict[str, Any] = {**card.to_dict(), **source.as_dict()}
    if card.inference.brain_mask:
        info["brain_mask_sha256"] = (brain_mask or brain_mask_source(source)).sha256
    return info


def brain_mask_source(source: ModelSource) -> ModelSource:
    """The brain-extraction stage of a chained model (its `brain_mask/` folder), at the same revision.

    Raises:
        ModelLoadError: the folder or one of its files is missing.
    """
    directory = source.directory / BRAIN_MASK_DIR
    missing = [name for name in BRAIN_MASK_FILES if not (source.directory / name).is_file()]
    if missing:
        raise ModelLoadError(
            f"the card of '{source.id}' chains a brain-extraction model (inference.brain_mask: true), but "
            f"{', '.join(missing)} is missing: restore the {BRAIN_MASK_DIR}/ folder, or set brain_mask: false"
        )
    weights = directory / WEIGHTS_NAME
    return ModelSource(f"{source.id}/{BRAIN_MASK_DIR}", source.revision, directory, weights, file_sha256(weights))


def push_model(
    directory: str | Path,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload unet3d model",
) -> str:
    """Upload a checked model directory to a Hub model repo; returns the new commit sha.

    Args:
        directory: folder with config.json, model.safetensors, model.yaml and README.md.
        repo_id: `owner/name`; created if missing.
        revision: branch to commit to (created from main if missing); default main.
        private: create the repo private.
    """
    from huggingface_hub import HfApi

    files = check_model_dir(directory)
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(directory),
            allow_patterns=files,
            revision=revision,
            commit_message=commit_message,
        )
    except (HfHubHTTPError, OSError) as e:
        hint = ""
        if getattr(getattr(e, "response", None), "status_code", None) in (401, 403):
            hint = " (set HF_TOKEN to a token with write access to this namespace)"
        raise ModelLoadError(f"upload to '{repo_id}' failed: {str(e).splitlines()[0]}{hint}") from e
    return str(info.oid)


def load_unet(source: ModelSource) -> UNet3D:
    """Build UNet3D from config.json and load the safetensors weights with strict=True (never a pickle)."""
    try:
        config = json.loads((source.directory / CONFIG_NAME).read_text(encoding="utf-8"))
        model = UNet3D(**config)
    except (json.JSONDecodeError, OSError) as e:
        raise ModelLoadError(f"cannot read {CONFIG_NAME} of '{source.id}': {e}") from e
    except (TypeError, ValueError) as e:
        raise ModelLoadError(f"{CONFIG_NAME} of '{source.id}' does not describe a UNet3D: {e}") from e
    try:
        load_model(model, source.weights, strict=True)
    except SafetensorError as e:
        raise ModelLoadError(f"'{source.weights.name}' is not a valid safetensors file: {e}") from e
    except RuntimeError as e:
        raise ModelLoadError(f"weights of '{source.id}' do not match its {CONFIG_NAME}: {str(e)[:300]}") from e
    return model.eval()
