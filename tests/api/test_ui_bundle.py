"""The NiiVue bundle: pinned once (package.json = package-lock.json), never committed, checked against the lock's
sha512 when the image build installs it without npm, and refused when it does not match or holds odd entries."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from api.ui import bundle

ROOT = Path(__file__).resolve().parents[2]


def tarball(files: dict[str, bytes], *, link: str | None = None) -> bytes:
    """An npm-style tarball (everything under package/), optionally with a symbolic link in it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in files.items():
            entry = tarfile.TarInfo(f"package/{name}")
            entry.size = len(content)
            archive.addfile(entry, io.BytesIO(content))
        if link is not None:
            entry = tarfile.TarInfo("package/escape")
            entry.type, entry.linkname = tarfile.SYMTYPE, link
            archive.addfile(entry)
    return buffer.getvalue()


def integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def test_niivue_is_pinned_to_one_exact_version_in_package_json_and_the_lock():
    wanted = json.loads((bundle.STATIC / "package.json").read_text())["dependencies"][bundle.PACKAGE]
    pin = bundle.pinned()
    assert wanted == pin.version == "0.69.0"  # exact: no range
    assert pin.integrity.startswith("sha512-")
    assert pin.url() == "https://registry.npmjs.org/@niivue/niivue/-/niivue-0.69.0.tgz"


def test_the_installed_bundle_is_never_committed():
    tracked = subprocess.run(["git", "ls-files", "api/ui/static"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()  # fmt: skip
    assert sorted(tracked) == [f"api/ui/static/{n}" for n in ("package-lock.json", "package.json", "viewer.css",
                                                              "viewer.js")]  # fmt: skip
    ignored = subprocess.run(["git", "check-ignore", "-q", str(bundle.NIIVUE_SCRIPT)], cwd=ROOT, check=False)
    assert ignored.returncode == 0


def test_a_tarball_from_the_folder_is_checked_and_unpacked_where_npm_puts_it(tmp_path):
    data = tarball({"dist/niivue.umd.js": b"window.niivue = {};", "package.json": b"{}"})
    pin = bundle.Pin("9.9.9", integrity(data))
    (tmp_path / pin.tarball).write_bytes(data)
    fetched = bundle.fetch(pin, tmp_path, registry="http://127.0.0.1:9")  # the folder has it: no request
    target = tmp_path / "node_modules" / "@niivue" / "niivue"
    bundle.unpack(fetched, target)
    assert (target / "dist" / "niivue.umd.js").read_bytes() == b"window.niivue = {};"
    bundle.unpack(tarball({"dist/niivue.umd.js": b"new"}), target)  # a reinstall replaces the old files
    assert sorted(p.name for p in target.rglob("*")) == ["dist", "niivue.umd.js"]


def test_a_tarball_that_does_not_match_the_lock_is_refused(tmp_path):
    pin = bundle.Pin("9.9.9", integrity(b"the real one"))
    (tmp_path / pin.tarball).write_bytes(b"something else")
    with pytest.raises(RuntimeError, match=r"does not match package-lock\.json"):
        bundle.fetch(pin, tmp_path, registry="http://127.0.0.1:9")
    with pytest.raises(RuntimeError, match="unsupported integrity algorithm 'sha1'"):
        bundle.check_integrity(b"x", "sha1-AAAA")


def test_a_tarball_with_a_link_or_a_path_out_is_refused(tmp_path):
    with pytest.raises(RuntimeError, match="unexpected entry: 'package/escape'"):
        bundle.unpack(tarball({"a.js": b""}, link="/etc/passwd"), tmp_path / "niivue")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        entry = tarfile.TarInfo("package/../../outside.js")
        archive.addfile(entry, io.BytesIO(b""))
    with pytest.raises(RuntimeError, match="unexpected entry"):
        bundle.unpack(buffer.getvalue(), tmp_path / "niivue")
    assert not (tmp_path / "niivue").exists() and not (tmp_path.parent / "outside.js").exists()


def test_without_the_tarball_and_without_network_the_install_says_why(tmp_path, capsys):
    code = bundle.main(["--from", str(tmp_path), "--registry", "http://127.0.0.1:9"])
    assert code == 1
    assert "NiiVue 0.69.0 could not be installed" in capsys.readouterr().err


def test_without_niivue_the_server_says_how_to_install_it(monkeypatch, tmp_path, caplog):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from api.ui.viewer import install_viewer_assets, viewer_markup

    monkeypatch.setattr(bundle, "NIIVUE_SCRIPT", tmp_path / "missing" / "niivue.umd.js")
    app = FastAPI()
    with caplog.at_level("WARNING", logger="api.ui.viewer"):
        install_viewer_assets(app)
    assert "the NiiVue viewer is not installed: run scripts/setup.sh" in caplog.text  # at start-up
    client = TestClient(app)
    missing = client.get("/viewer-assets/niivue.umd.js")
    assert missing.status_code == 404 and "npm ci --omit=optional" in missing.json()["detail"]
    assert client.get("/viewer-assets/viewer.js").status_code == 200  # the page's own code still loads
    assert "not installed" in viewer_markup()  # what the Viewer tab says when the script does not load
