"""Assemble the Hugging Face Space from the repository's own files and upload it.

    python -m space.publish --repo-id OWNER/NAME [--private]     # create/update the Space (needs HF_TOKEN)
    python -m space.publish --repo-id OWNER/NAME --dry-run DIR   # write the Space folder to DIR, upload nothing
    python -m space.publish --repo-id OWNER/NAME --model runs/my-run/model     # a Space for your own model
    python -m space.publish --repo-id OWNER/NAME --model OWNER/MODEL --revision SHA   # ... or one on the Hub

The Space is the service image: the root `Dockerfile` byte for byte, the packages it copies, the model and the pinned
requirements, with a Space card (`sdk: docker`) as the Space's README.md: `space/README.md` for the shipped model, a
card written from the model's own model.yaml for another. Another model is chosen with the Space variables
UNET3D_MODEL / UNET3D_MODEL_REVISION, which a Docker Space passes to the build as build arguments (the image bakes
the model in, verified) and to the container as environment. Every Space also gets `PUBLIC_SETTINGS`: the per-client
rate limit (off in the image, for local use) and the proxies whose X-Forwarded-For names the visitor.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import yaml
from huggingface_hub.errors import HfHubHTTPError, HFValidationError
from huggingface_hub.utils import validate_repo_id

from unet3d.errors import ModelLoadError
from unet3d.hub import check_model_dir

ROOT = Path(__file__).resolve().parent.parent
CARD = Path(__file__).resolve().parent / "README.md"
# What the Dockerfile copies (plus the Dockerfile and .dockerignore themselves): keep in step with its COPY lines.
FILES = ("Dockerfile", ".dockerignore", "requirements.txt", "pyproject.toml", "model.yaml")
FOLDERS = ("unet3d", "api")
SHIPPED_MODEL = "models/unet3d-brain-tissue"
# A public Space faces anonymous traffic: limit each visitor (docs/hardening.md), who is known by the address the
# Hub's proxy forwards. The proxy reaches the container from a private network (RFC 1918 and shared address space).
PUBLIC_SETTINGS = {
    "UNET3D_RATE_LIMIT": "10",
    "UNET3D_RATE_BURST": "200",
    "UNET3D_TRUSTED_PROXIES": "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10",
}
# node_modules: the review viewer's NiiVue, installed locally by npm; the Space's image build fetches its own copy
# (a Space is a git repository: third-party bundles stay out of it, as out of ours).
IGNORED = ("__pycache__", "*.py[cod]", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".DS_Store", ".env*", "*.pem",
           "node_modules")  # fmt: skip
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class PublishError(Exception):
    """The Space cannot be assembled or uploaded; the message says what to fix."""


def read_card(path: Path = CARD) -> dict:
    """The YAML front matter of a Space README.md."""
    text = path.read_text(encoding="utf-8")
    match = re.match(r"^---\n(.*?)\n---\n", text, flags=re.DOTALL)
    if match is None:
        raise PublishError(f"{path} has no YAML front matter between '---' lines")
    card = yaml.safe_load(match.group(1))
    if not isinstance(card, dict):
        raise PublishError(f"the front matter of {path} is not a mapping")
    return card


def dockerfile_port(path: Path) -> int:
    """The default of `ARG PORT=...` in a Dockerfile: the port the image listens on."""
    match = re.search(r"^ARG PORT=(\d+)\s*$", path.read_text(encoding="utf-8"), flags=re.MULTILINE)
    if match is None:
        raise PublishError(f"{path} declares no 'ARG PORT=<number>'")
    return int(match.group(1))


def check_card(card: dict, port: int) -> None:
    """Raise PublishError unless the card is a Docker Space card that points at the image's port."""
    if card.get("sdk") != "docker":
        raise PublishError(f"space/README.md must say 'sdk: docker', got {card.get('sdk')!r}")
    if card.get("app_port") != port:
        raise PublishError(
            f"space/README.md has app_port {card.get('app_port')!r} but the Dockerfile listens on {port}"
        )
    missing = [key for key in ("title", "emoji", "license", "models", "short_description") if not card.get(key)]
    if missing:
        raise PublishError(f"space/README.md lacks {', '.join(missing)} in its front matter")


def assemble(
    target: Path, *, root: Path = ROOT, card: Path = CARD, model: str | None = None, revision: str | None = None
) -> tuple[list[str], dict[str, str]]:
    """Write the Space folder into `target` (which must be missing or empty).

    Args:
        model: None for the shipped model; else a model directory (copied into the Space's models/) or a Hub repo
            id (fetched by the image's build).
        revision: with a Hub `model`: the branch, tag or commit sha to serve (pin a sha).

    Returns:
        The Space's files, relative to `target`, sorted; and the Space variables: the model's, and
        `PUBLIC_SETTINGS`.
    """
    check_card(read_card(card), dockerfile_port(root / "Dockerfile"))
    if target.exists() and not target.is_dir():
        raise PublishError(f"'{target}' is a file, not a folder: give a new or empty folder")
    if target.exists() and any(target.iterdir()):
        raise PublishError(f"'{target}' is not empty: give a new or empty folder")
    if revision is not None and (model is None or Path(model).is_dir()):
        raise PublishError("--revision goes with a Hub --model (OWNER/NAME)")
    if model is None:
        variables: dict[str, str] = {}
        card_text = card.read_text(encoding="utf-8")
        copies = [(root / SHIPPED_MODEL, SHIPPED_MODEL)]
    elif Path(model).is_dir():
        copied = f"models/{_model_name(Path(model))}"
        variables = {"UNET3D_MODEL": copied}
        card_text = _own_model_card(Path(model) / "model.yaml", card, hub_id=None)
        copies = [(Path(model), copied)]
    else:
        _check_repo_id(model, "--model")
        variables = {"UNET3D_MODEL": model, **({"UNET3D_MODEL_REVISION": revision} if revision else {})}
        card_text = _own_model_card(None, card, hub_id=model)
        copies = []
    target.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copyfile(root / name, target / name)
    for folder in FOLDERS:
        shutil.copytree(root / folder, target / folder, ignore=shutil.ignore_patterns(*IGNORED))
    for source, copied in copies:
        shutil.copytree(source, target / copied, ignore=shutil.ignore_patterns(*IGNORED))
    if not copies:  # the Dockerfile copies models/: a Hub model needs none of its own
        (target / "models").mkdir()
        (target / "models" / "README.md").write_text(f"The model comes from the Hub: {model}.\n", encoding="utf-8")
    (target / "README.md").write_text(card_text, encoding="utf-8")
    files = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    return files, {**variables, **PUBLIC_SETTINGS}


def _model_name(directory: Path) -> str:
    """The folder name a model directory gets under models/: its card's name, checked first (all four files)."""
    try:
        check_model_dir(directory)
    except ModelLoadError as e:
        raise PublishError(f"--model: {e}") from e
    name = str(yaml.safe_load((directory / "model.yaml").read_text(encoding="utf-8")).get("name") or directory.name)
    return _SAFE_NAME.sub("-", name).strip("-.") or "model"


def _own_model_card(model_yaml: Path | None, template: Path, *, hub_id: str | None) -> str:
    """A Space card for another model: the template's front matter with that model's title, licence and link, and a
    body that describes that model (its classes), not the shipped one."""
    front = read_card(template)
    body = [
        "The review UI is the `/ui/` page of this Space; the HTTP API is `POST /v1/predict` (multipart field `file`), "
        "`GET /v1/model` for the model card, interactive docs at `/docs`. Masks come back on the exact voxel grid of "
        "the uploaded NIfTI file.",
    ]
    if model_yaml is not None:
        card = yaml.safe_load(model_yaml.read_text(encoding="utf-8"))
        title = str(card.get("name", "unet3d model"))
        front["license"] = card.get("license", front["license"])
        front["short_description"] = (str(card.get("description") or title).split(". ")[0])[:60]
        classes = ", ".join(f"{i} {c['name']}" for i, c in enumerate(card.get("classes", [])))
        summary = f"**Model:** {title} (v{card.get('version', '?')}), classes {classes}."
        body += ["", summary, "", str(card.get("description", ""))]
        front.pop("models", None)  # not on the Hub: the Space holds its copy
    else:
        title = str(hub_id).split("/")[-1]
        front["models"] = [hub_id]
        front["short_description"] = f"unet3d segmentation with {hub_id}"[:60]
        body += ["", f"**Model:** [`{hub_id}`](https://huggingface.co/{hub_id}), with its model card."]
    front["title"] = title[:60]
    body += ["", "## Not for clinical use", "", "A research and demonstration tool, not a medical device."]
    header = yaml.safe_dump(front, sort_keys=False, allow_unicode=True).strip()
    return f"---\n{header}\n---\n\n# {title}\n\n" + "\n".join(body).strip() + "\n"


def _check_repo_id(repo_id: str, option: str) -> None:
    if "/" not in repo_id:
        raise PublishError(f"{option} must look like OWNER/NAME, got '{repo_id}'")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise PublishError(f"{option} '{repo_id}' is not a valid Hub repo id: {str(e).splitlines()[0]}") from e


def upload(
    folder: Path,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    variables: dict[str, str] | None = None,
) -> str:
    """Create the Docker Space if needed, set its variables, and make its files exactly `folder`'s; returns the
    commit sha. Variables go first: the commit starts the build that reads them."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="space", space_sdk="docker", private=private, exist_ok=True)
    current = api.get_space_variables(repo_id)
    for key in ("UNET3D_MODEL", "UNET3D_MODEL_REVISION"):  # a model chosen by an earlier publish goes with it
        if key in current and key not in (variables or {}):
            api.delete_space_variable(repo_id, key)
    for key, value in (variables or {}).items():
        api.add_space_variable(repo_id, key, value)
    info = api.upload_folder(
        repo_id=repo_id,
        repo_type="space",
        folder_path=folder,
        commit_message="Publish the unet3d Space",
        delete_patterns="*",  # files gone from the source go from the Space too (.gitattributes stays)
    )
    return str(info.oid)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m space.publish",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--repo-id", required=True, help="the Space, OWNER/NAME (needs HF_TOKEN or `hf auth login`)")
    parser.add_argument(
        "--model", default=None, help="a model directory or Hub repo id to serve (default: the shipped model)"
    )
    parser.add_argument("--revision", default=None, help="with a Hub --model: the branch, tag or commit sha (pin one)")
    parser.add_argument("--dry-run", metavar="DIR", type=Path, help="write the Space folder to DIR and upload nothing")
    parser.add_argument("--private", action="store_true", help="create the Space private")
    args = parser.parse_args(argv)
    try:
        _check_repo_id(args.repo_id, "--repo-id")
        if args.dry_run is not None:
            files, variables = assemble(args.dry_run, model=args.model, revision=args.revision)
            print(json.dumps({"repo_id": args.repo_id, "folder": str(args.dry_run), "files": files,
                              "variables": variables}))  # fmt: skip
            return 0
        with tempfile.TemporaryDirectory(prefix="unet3d-space-") as tmp:
            files, variables = assemble(Path(tmp) / "space", model=args.model, revision=args.revision)
            commit = upload(Path(tmp) / "space", args.repo_id, private=args.private, variables=variables)
        print(json.dumps({"repo_id": args.repo_id, "commit": commit, "files": len(files), "variables": variables}))
        return 0
    except PublishError as e:
        print(f"space.publish: error: {e}", file=sys.stderr)
        return 1
    except (HfHubHTTPError, OSError) as e:
        print(f"space.publish: error: upload to '{args.repo_id}' failed: {str(e).splitlines()[0]}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
