"""The /docs and /redoc bundles come from the pinned `fastapi-offline` package, never from copies in this repo."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
BUNDLES = ["swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"]


@pytest.mark.parametrize("asset", BUNDLES)
def test_docs_assets_are_the_installed_package_files_byte_for_byte(tiny_server, asset):
    shipped = (resources.files("fastapi_offline") / "static" / asset).read_bytes()
    answer = httpx.get(f"{tiny_server.url}/docs-assets/{asset}")
    assert answer.status_code == 200
    assert answer.content == shipped


def test_the_repository_keeps_no_copy_of_the_bundles():
    copies = [p.relative_to(ROOT) for name in BUNDLES for p in (ROOT / "api").rglob(name)]
    assert copies == []
    assert "fastapi-offline==" in (ROOT / "requirements.txt").read_text()  # pinned where the image installs from
