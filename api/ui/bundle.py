"""The NiiVue bundle the browser viewer runs: where it lives, whether it is installed, and how to install it.

NiiVue (npm `@niivue/niivue`, BSD-2-Clause) is pinned in `api/ui/static/package.json` and `package-lock.json`, and
installed into `api/ui/static/node_modules/` (gitignored: third-party code never enters the repository) by
`scripts/setup.sh` (`npm ci`). The image build has no node: `python api/ui/bundle.py --from DIR` (this file runs on
its own, standard library only) takes the npm tarball named in the lock from DIR (the offline build's wheelhouse) or
else from the npm registry, checks it against the lock's sha512 integrity and unpacks it where npm would;
`--download-to DIR` only fetches it (what scripts/container-smoke.sh puts beside the wheels). The app serves
`dist/niivue.umd.js` from it (no CDN: hospitals run offline); when it is missing, the server says so at start-up
and the viewer says so in the page.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATIC = Path(__file__).resolve().parent / "static"
PACKAGE = "@niivue/niivue"
NIIVUE_DIR = STATIC / "node_modules" / "@niivue" / "niivue"
# The UMD build: one self-contained, minified script that defines `window.niivue` (no further requests).
NIIVUE_SCRIPT = NIIVUE_DIR / "dist" / "niivue.umd.js"
DEFAULT_REGISTRY = "https://registry.npmjs.org"
INSTALL_HINT = (
    "the NiiVue viewer is not installed: run scripts/setup.sh, or 'npm ci --omit=optional' in api/ui/static "
    "(or 'python api/ui/bundle.py' where there is no npm), then restart the server"
)


@dataclass(frozen=True)
class Pin:
    """NiiVue's version and sha512 integrity as package-lock.json pins them."""

    version: str
    integrity: str

    @property
    def tarball(self) -> str:
        """The file name of the npm tarball (`npm pack` names it so)."""
        return f"niivue-niivue-{self.version}.tgz"

    def url(self, registry: str = DEFAULT_REGISTRY) -> str:
        """Where the registry serves the tarball."""
        return f"{registry.rstrip('/')}/{PACKAGE}/-/niivue-{self.version}.tgz"


def installed() -> bool:
    """Whether the NiiVue script the page loads is there."""
    return NIIVUE_SCRIPT.is_file()


def pinned(lock: Path = STATIC / "package-lock.json") -> Pin:
    """The pinned NiiVue release.

    Raises:
        RuntimeError: the lock does not pin NiiVue.
    """
    packages = json.loads(lock.read_text(encoding="utf-8")).get("packages", {})
    entry = packages.get(f"node_modules/{PACKAGE}")
    if not entry or "integrity" not in entry:
        raise RuntimeError(f"{lock} does not pin {PACKAGE} with an integrity hash")
    return Pin(entry["version"], entry["integrity"])


def check_integrity(data: bytes, integrity: str) -> None:
    """Refuse a tarball whose digest is not the lock's (npm's Subresource Integrity form, `sha512-<base64>`).

    Raises:
        RuntimeError: the digest differs or the algorithm is not sha512.
    """
    algorithm, _, expected = integrity.partition("-")
    if algorithm != "sha512":
        raise RuntimeError(f"unsupported integrity algorithm {algorithm!r} in package-lock.json")
    actual = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if actual != expected:
        raise RuntimeError(f"the NiiVue tarball does not match package-lock.json (sha512 {actual[:16]}...)")


def fetch(pin: Pin, folder: Path | None, registry: str) -> bytes:
    """The tarball, from `folder` when it holds one that matches the lock, else from the registry (checked)."""
    cached = folder / pin.tarball if folder is not None else None
    if cached is not None and cached.is_file():
        data = cached.read_bytes()
        check_integrity(data, pin.integrity)
        return data
    with urllib.request.urlopen(pin.url(registry), timeout=120) as answer:
        data = bytes(answer.read())
    check_integrity(data, pin.integrity)
    return data


def unpack(data: bytes, target: Path = NIIVUE_DIR) -> None:
    """Unpack the npm tarball's `package/` folder into `target`, replacing what was there."""
    with tempfile.TemporaryDirectory(dir=target.parent if target.parent.is_dir() else None) as work:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            members = archive.getmembers()
            for member in members:  # an npm tarball holds files and folders under package/, nothing else
                parts = Path(member.name).parts
                if not (member.isfile() or member.isdir()) or member.name.startswith("/") or ".." in parts:
                    raise RuntimeError(f"the NiiVue tarball holds an unexpected entry: {member.name[:80]!r}")
            # Python's own check too where it has one (3.11.4+; an older Debian python3 may lack it).
            safe: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            archive.extractall(work, members=members, **safe)
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(Path(work) / "package"), target)


def main(argv: list[str] | None = None) -> int:
    """Install the pinned NiiVue (from --from DIR when it holds the tarball, else the registry), or with
    --download-to DIR only put the tarball there."""
    parser = argparse.ArgumentParser(prog="python api/ui/bundle.py", description=main.__doc__)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--from", dest="source", type=Path, help="a folder that may hold the tarball, e.g. ./wheels")
    where.add_argument("--download-to", type=Path, help="only fetch the tarball into this folder")
    parser.add_argument("--registry", default=os.environ.get("NPM_CONFIG_REGISTRY", DEFAULT_REGISTRY))
    args = parser.parse_args(argv)
    pin = pinned()
    try:
        data = fetch(pin, args.source or args.download_to, args.registry)
        if args.download_to is not None:
            args.download_to.mkdir(parents=True, exist_ok=True)
            (args.download_to / pin.tarball).write_bytes(data)
            print(f"NiiVue {pin.version}: {args.download_to / pin.tarball}")
            return 0
        unpack(data)
    except (OSError, RuntimeError) as e:
        print(f"NiiVue {pin.version} could not be installed: {e}", file=sys.stderr)
        return 1
    print(f"NiiVue {pin.version} installed in {NIIVUE_DIR}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
