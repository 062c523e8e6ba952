"""Assemble the Hugging Face Space from the repository's own files and upload it.

    python -m space.publish --repo-id OWNER/NAME [--private]     # create/update the Space (needs HF_TOKEN)
    python -m space.publish --repo-id OWNER/NAME --dry-run DIR   # write the Space folder to DIR, upload nothing

The Space is the service image: the root `Dockerfile` byte for byte, the packages it copies, the default model and
the pinned requirements, with `space/README.md` (the Space card, `sdk: docker`) as the Space's README.md.
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
from huggingface_hub.errors import HfHubHTTPError

ROOT = Path(__file__).resolve().parent.parent
CARD = Path(__file__).resolve().parent / "README.md"
# What the Dockerfile copies (plus the Dockerfile and .dockerignore themselves): keep in step with its COPY lines.
FILES = ("Dockerfile", ".dockerignore", "requirements.txt", "pyproject.toml", "model.yaml")
FOLDERS = ("unet3d", "api", "models/unet3d-brain-tissue")
IGNORED = ("__pycache__", "*.py[cod]", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".DS_Store", ".env*", "*.pem")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


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


def assemble(target: Path, *, root: Path = ROOT, card: Path = CARD) -> list[str]:
    """Write the Space folder into `target` (which must be missing or empty).

    Returns:
        The Space's files, relative to `target`, sorted.
    """
    check_card(read_card(card), dockerfile_port(root / "Dockerfile"))
    if target.exists() and any(target.iterdir()):
        raise PublishError(f"'{target}' is not empty: give a new or empty folder")
    target.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copyfile(root / name, target / name)
    for folder in FOLDERS:
        shutil.copytree(root / folder, target / folder, ignore=shutil.ignore_patterns(*IGNORED))
    shutil.copyfile(card, target / "README.md")
    return sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())


def upload(folder: Path, repo_id: str, *, private: bool = False, token: str | None = None) -> str:
    """Create the Docker Space if needed and make its files exactly `folder`'s; returns the commit sha."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="space", space_sdk="docker", private=private, exist_ok=True)
    info = api.upload_folder(
        repo_id=repo_id,
        repo_type="space",
        folder_path=folder,
        commit_message="Publish the unet3d Space",
        delete_patterns="*",  # files gone from the source go from the Space too (.gitattributes stays)
    )
    return str(info.oid)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m space.publish", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo-id", required=True, help="the Space, OWNER/NAME")
    parser.add_argument("--dry-run", metavar="DIR", type=Path, help="write the Space folder to DIR and upload nothing")
    parser.add_argument("--private", action="store_true", help="create the Space private")
    args = parser.parse_args(argv)
    try:
        if not _REPO_ID.match(args.repo_id):
            raise PublishError(f"--repo-id must look like OWNER/NAME, got '{args.repo_id}'")
        if args.dry_run is not None:
            files = assemble(args.dry_run)
            print(json.dumps({"repo_id": args.repo_id, "folder": str(args.dry_run), "files": files}))
            return 0
        with tempfile.TemporaryDirectory(prefix="unet3d-space-") as tmp:
            files = assemble(Path(tmp) / "space")
            commit = upload(Path(tmp) / "space", args.repo_id, private=args.private)
        print(json.dumps({"repo_id": args.repo_id, "commit": commit, "files": len(files)}))
        return 0
    except PublishError as e:
        print(f"space.publish: error: {e}", file=sys.stderr)
        return 1
    except (HfHubHTTPError, OSError) as e:
        print(f"space.publish: error: upload to '{args.repo_id}' failed: {str(e).splitlines()[0]}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
