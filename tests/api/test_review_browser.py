"""A cohort review in a real headless Chromium: open a case from the worklist, scrub 50 slices in the browser's viewer
with no request to the server, paint a correction, undo and redo it, save it, reload the page and find it, record
verdicts with the keyboard (a stale one refused until the case is reloaded) and see the worklist follow."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

import nibabel as nib
import numpy as np
import pytest

from api.ui import bundle

playwright = pytest.importorskip("playwright.sync_api")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "api" / "examples" / "mni152_t1.nii.gz"  # 197 × 233 × 189 at 1 mm, RAS: k is the axial slice
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage",
]  # fmt: skip
AXIAL = 0  # NiiVue's tile of the axial view

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium (apt-get install chromium)"),
]


@pytest.fixture(scope="module")
def review_server(launch_server, tiny_model_dir):
    """A server of its own (its own review database), with the tiny model: the cases come from the HTTP API."""
    assert bundle.installed(), bundle.INSTALL_HINT  # scripts/setup.sh installs it (npm ci)
    return launch_server({"UNET3D_MODEL": str(tiny_model_dir)}, "review-browser")


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def brain_case(client, tmp_path: Path, name: str) -> dict:
    """A case of the MNI152 T1 at 2 × 2 × 1 mm (all 189 axial slices, a quarter of the voxels: a quicker test), with
    a two-class mask by intensity (what an imported batch result would be)."""
    image = nib.load(EXAMPLE)
    data = np.asarray(image.dataobj, dtype=np.float32)[::2, ::2, :]
    affine = image.affine @ np.diag([2.0, 2.0, 1.0, 1.0])
    labels = ((data > 60).astype(np.uint8) + (data > 90)).astype(np.uint8)
    volume, mask = tmp_path / f"{name}.nii.gz", tmp_path / f"{name}_mask.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), volume)
    nib.save(nib.Nifti1Image(labels, affine), mask)
    created = client.post(
        "/v1/cases", params={"name": name, "author": "import"},
        files={"volume": (volume.name, volume.read_bytes()), "mask": (mask.name, mask.read_bytes())},
    )  # fmt: skip
    assert created.status_code == 201, created.text
    return created.json()


def open_page(page, url: str) -> None:
    """Load the UI and sign the tab with a reviewer name (asked once per tab: the server has no login)."""
    expect = playwright.expect
    page.goto(f"{url}/ui/", wait_until="load")
    page.get_by_role("tab", name="Worklist").click()
    expect(page.locator("#worklist")).to_contain_text("brain-a", timeout=30_000)  # the page's load event ran
    name = page.locator("#reviewer-name").get_by_role("textbox")
    name.fill("ann")
    name.press("Enter")
    page.locator("#app-header").click()  # out of the box: the tab keeps the name


def open_case(page, name: str, case_id: int, revision: int) -> None:
    expect = playwright.expect
    page.get_by_role("tab", name="Worklist").click()
    page.locator("#worklist [role=gridcell]", has_text=name).first.click()
    expect(page.locator("#case-info")).to_contain_text(f"(case {case_id})", timeout=30_000)
    page.wait_for_function(f"() => window.unet3dViewer.state().loaded === '{case_id}/{revision}'", timeout=60_000)


def axial_point(page, x: float = 0.5, y: float = 0.5) -> tuple[float, float]:
    """A point of the axial view (fractions of its width and height), in page coordinates."""
    canvas = page.locator("#viewer canvas")
    canvas.scroll_into_view_if_needed()
    box, tile = canvas.bounding_box(), page.evaluate(f"() => window.unet3dViewer.tile({AXIAL})")
    return box["x"] + tile["left"] + tile["width"] * x, box["y"] + tile["top"] + tile["height"] * y


def test_a_cohort_review_in_the_browser(browser, review_server, tmp_path):
    expect = playwright.expect
    with review_server.client() as client:
        first, second = brain_case(client, tmp_path, "brain-a"), brain_case(client, tmp_path, "brain-b")
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.on("pageerror", lambda error: errors.append(str(error)))
    open_page(page, review_server.url)
    open_case(page, "brain-a", first["id"], 0)
    expect(page.get_by_role("tab", name="Viewer")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#viewer")).to_contain_text("j / k next / previous case")  # the keys, shown in the page

    # Scrub 50 axial slices with the wheel: all in the browser, not one request to the server.
    x, y = axial_point(page)
    page.mouse.click(x, y)
    location = page.locator("#viewer .nv-location")
    expect(location).to_have_attribute("data-k", re.compile(r"^\d+$"))
    start = int(location.get_attribute("data-k"))
    requests.clear()
    for _ in range(50):
        page.mouse.wheel(0, -100)
    expect(location).to_have_attribute("data-k", str(start - 50))
    page.wait_for_timeout(500)  # anything the scrub would have sent has had time to leave
    assert requests == [], f"the scrub sent {len(requests)} requests: {requests[:5]}"

    # Paint class 1 across the axial view; undo, redo; save as revision 1.
    page.keyboard.press("b")
    expect(page.locator("#viewer input[name=nv-tool][value=paint]")).to_be_checked()
    page.locator("#viewer .nv-class").select_option("1")
    page.mouse.move(*axial_point(page, 0.35, 0.5))
    page.mouse.down()
    for step in range(1, 21):
        page.mouse.move(*axial_point(page, 0.35 + 0.3 * step / 20, 0.5))
    page.mouse.up()
    changes = page.locator("#viewer .nv-changes")
    expect(changes).not_to_have_attribute("data-changed", "0")
    painted = int(changes.get_attribute("data-changed"))
    page.keyboard.press("Control+z")
    expect(changes).to_have_attribute("data-changed", "0")
    page.keyboard.press("Control+y")
    expect(changes).to_have_attribute("data-changed", str(painted))
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "review-viewer.png"), full_page=True)
    page.locator("#viewer .nv-save").click()
    expect(page.locator("#viewer .nv-message")).to_contain_text("Saved as revision 1", timeout=30_000)
    expect(page.locator("#revisions tr[data-revision='1']")).to_contain_text("ann", timeout=30_000)
    expect(page.locator("#case-info")).to_contain_text("mask revision 1")
    with review_server.client() as client:
        stored = client.get(f"/v1/cases/{first['id']}").json()
    revision = stored["revisions"][1]
    assert (revision["author"], revision["parent"], revision["source"]) == ("ann", 0, "correction")
    assert revision["changed_voxels"]["1"]["added"] == painted  # every voxel painted became class 1

    # A reload starts a new session of the page: the correction is there, listed and shown, and the tab still
    # knows who is reviewing.
    page.reload(wait_until="load")
    page.get_by_role("tab", name="Worklist").click()
    expect(page.locator("#worklist")).to_contain_text("brain-a", timeout=30_000)
    expect(page.locator("#reviewer-name").get_by_role("textbox")).to_have_value("ann")
    open_case(page, "brain-a", first["id"], 1)
    expect(page.locator("#revisions tr[data-revision='1']")).to_contain_text("ann")
    shown = page.evaluate("() => window.unet3dViewer.state().labels")
    assert shown["1"] == revision["class_volumes"][1]["voxels"]

    # Verdicts from the keyboard; the worklist follows.
    page.locator("#verdict-score label", has_text="4").click()
    page.locator("#verdict-note").get_by_role("textbox").fill("corrected the left insula")
    page.locator("#app-header").click()  # out of the note, so that the keys are shortcuts
    page.keyboard.press("n")
    expect(page.locator("#case-info")).to_contain_text("status needs correction · by ann", timeout=30_000)
    expect(page.locator("#history")).to_contain_text("corrected the left insula")
    page.get_by_role("tab", name="Worklist").click()
    row = page.locator("#worklist [role=row]", has_text="brain-a")
    expect(row).to_contain_text("needs correction")
    expect(row).to_contain_text("ann")

    # Someone else changes the case: this tab's next verdict is refused until it reloads the case.
    with review_server.client() as client:
        etag = client.get(f"/v1/cases/{first['id']}").headers["etag"]
        other = client.put(f"/v1/cases/{first['id']}/review", headers={"If-Match": etag},
                           json={"verdict": "rejected", "reviewer": "bob"})  # fmt: skip
        assert other.status_code == 200, other.text
    page.keyboard.press("a")
    expect(page.get_by_text("changed since this tab loaded it").first).to_be_visible(timeout=30_000)
    page.locator("#case-reload").click()
    expect(page.locator("#case-info")).to_contain_text("status rejected · by bob", timeout=30_000)
    page.locator("#app-header").click()
    page.keyboard.press("a")
    expect(page.locator("#case-info")).to_contain_text("status accepted · by ann", timeout=30_000)
    page.get_by_role("tab", name="Worklist").click()
    expect(page.locator("#worklist [role=row]", has_text="brain-a")).to_contain_text("accepted")

    page.keyboard.press("j")  # the next case of the worklist
    expect(page.locator("#case-info")).to_contain_text(f"(case {second['id']})", timeout=30_000)
    page.wait_for_function(f"() => window.unet3dViewer.state().loaded === '{second['id']}/0'", timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "review-worklist.png"), full_page=True)
    assert errors == [], f"uncaught errors in the page: {errors}"
    assert {urlparse(url).hostname for url in requests} <= {"127.0.0.1"}, "the page reached out of the server"
    context.close()
