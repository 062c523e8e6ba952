"""The review UI in a real headless Chromium against the shipped model: the whole reviewing path, end to end."""

from __future__ import annotations

import io
import re
from pathlib import Path
from urllib.parse import urlparse

import nibabel as nib
import numpy as np
import pytest
from dicom_series import template, write_series, zip_folder
from helpers import STRICT_KEY
from PIL import Image

from api.ui.rendering import CONFUSED, FALSE_NEGATIVE, FALSE_POSITIVE

playwright = pytest.importorskip("playwright.sync_api")

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage",
]  # fmt: skip
SEGMENT_TIMEOUT_MS = 180_000
PLANES = ("axial", "coronal", "sagittal")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium (apt-get install chromium)"),
]


@pytest.fixture(scope="module")
def hosts() -> set[str]:
    """Every host name the page requested."""
    return set()


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module (Playwright's sync API allows one driver at a time)."""
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page_errors() -> list[str]:
    """Uncaught exceptions in the page's JavaScript."""
    return []


@pytest.fixture(scope="module")
def page(browser, brain_server, hosts, page_errors):
    page = browser.new_context(viewport={"width": 1440, "height": 1000}).new_page()
    page.on("request", lambda request: record_host(hosts, request.url))
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    yield page
    page.context.close()


def record_host(hosts: set[str], url: str) -> None:
    """Note the host of a request that goes over the network (data: and blob: URLs stay in the page)."""
    parsed = urlparse(url)
    if parsed.scheme not in {"data", "blob"}:
        hosts.add(parsed.hostname or url)


def picture(page, selector: str) -> np.ndarray:
    source = page.locator(f"{selector} img").get_attribute("src")
    return np.asarray(Image.open(io.BytesIO(page.request.get(source).body())).convert("RGB")).astype(int)


def blue(pixels: np.ndarray) -> int:
    """Pixels tinted by the white-matter colour (#56b4e9): blue well above red."""
    return int(((pixels[..., 2] - pixels[..., 0]) > 50).sum())


def orange(pixels: np.ndarray) -> int:
    """Pixels tinted by the grey-matter colour (#e69f00): red well above blue."""
    return int(((pixels[..., 0] - pixels[..., 2]) > 50).sum())


def tinted(pixels: np.ndarray, color: str) -> int:
    """Pixels whose colour, after blending over grey, still leans clearly towards `color` (red, blue or magenta)."""
    red, green, blue = (pixels[..., c] for c in range(3))
    leaning = {
        FALSE_POSITIVE: (red - np.maximum(green, blue)) > 60,
        FALSE_NEGATIVE: ((blue - red) > 80) & ((blue - green) > 40),
        CONFUSED: ((red - green) > 60) & ((blue - green) > 60),
    }
    return int(leaning[color].sum())


def click_slider(page, selector: str, fraction: float) -> None:
    box = page.locator(f"{selector} input[type=range]").bounding_box()
    page.mouse.click(box["x"] + box["width"] * fraction, box["y"] + box["height"] / 2)


def wait_for_new_image(page, plane: str, before: str | None, *, index: int | None = None) -> None:
    """Wait until the view of `plane` shows another picture than `before` (and, given `index`, that slice's).

    Views are redrawn one request at a time, always with the latest values: after several moves a picture of an
    earlier one can arrive first, so a step that moves a slider waits for the slice it asked for.
    """
    view = page.locator(f"#{plane}-view img")
    playwright.expect(view).not_to_have_attribute("src", before or "", timeout=20_000)
    if index is not None:  # a view's file name says which slice it shows
        playwright.expect(view).to_have_attribute("src", re.compile(rf"_{plane}_{index:03d}\.png$"), timeout=20_000)


def click_view(page, plane: str, x: float, y: float) -> None:
    """Click the view of `plane` at (x, y), fractions of its width and height, once its picture has loaded: Gradio
    maps a click on a picture that is still loading to no point."""
    view = page.locator(f"#{plane}-view img")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=view.element_handle(), timeout=20_000)
    box = view.bounding_box()
    view.click(position={"x": box["width"] * x, "y": box["height"] * y})


def slice_indices(page) -> list[str]:
    return [page.locator(f"#{plane}-slider input[type=number]").input_value() for plane in PLANES]


def test_review_flow_in_a_real_browser(page, hosts, page_errors, brain_server, tmp_path):
    expect = playwright.expect
    page.goto(f"{brain_server.url}/ui/", wait_until="load")
    expect(page.locator("#segment-btn")).to_be_visible(timeout=30_000)
    # Filled in by the page's load event, which waits for a free worker like any other event.
    expect(page.locator("#app-header")).to_contain_text("unet3d-brain-tissue", timeout=30_000)
    expect(page.locator("#app-header")).to_contain_text("grey matter, white matter")  # as the legend lists them
    empty = page.locator("#mask-output .empty")  # one line saying what comes there, not a tall blank box
    hint = empty.evaluate("e => getComputedStyle(e, '::after').content")
    assert hint == '"The mask (.nii.gz) appears here"' and empty.bounding_box()["height"] < 80, hint
    expect(page.locator("#legend")).to_be_in_viewport()

    page.locator("#example-btn").click()
    expect(page.locator("#mask-output")).to_contain_text("Running the network", timeout=60_000)  # stage progress
    expect(page.locator("#mask-output a[href*='mni152_t1_mask.nii.gz']")).to_be_visible(timeout=SEGMENT_TIMEOUT_MS)
    expect(page.locator("#status")).to_contain_text("197 × 233 × 189 voxels")
    expect(page.locator("#qc-banner")).to_be_hidden()  # QC found nothing wrong with the skull-stripped template
    name = page.locator("#mask-output td.filename")  # the whole name, wrapped if need be, not cut in the middle
    width, room, shown = name.evaluate("e => [e.scrollWidth, e.clientWidth, getComputedStyle(e, '::before').content]")
    assert width <= room and shown == '"mni152_t1_mask.nii.gz"', f"the mask's name is cut in the sidebar: {shown}"
    for plane in PLANES:
        expect(page.locator(f"#{plane}-view img")).to_be_visible(timeout=20_000)
    assert orange(picture(page, "#axial-view")) > 2000, "no grey-matter overlay in the axial view"
    # Each view: a named click target and one tab stop for its download, which keeps a name saying what it shows.
    for plane in PLANES:
        expect(page.locator(f"#{plane}-view button[aria-label^='{plane.capitalize()} view: click']")).to_have_count(1)
        expect(page.locator(f"#{plane}-view a.download-link")).to_have_attribute("tabindex", "-1")
    page.locator("#axial-view button[aria-label=Download]").focus()
    with page.expect_download(timeout=20_000) as saved:
        page.keyboard.press("Enter")
    index = int(page.locator("#axial-slider input[type=number]").input_value())
    assert saved.value.suggested_filename == f"mni152_t1_axial_{index:03d}.png"
    expect(page.locator("#legend")).to_contain_text("mL")

    for plane, fraction in (("axial", 0.35), ("coronal", 0.6), ("sagittal", 0.65)):
        before = page.locator(f"#{plane}-view img").get_attribute("src")
        click_slider(page, f"#{plane}-slider", fraction)
        wait_for_new_image(page, plane, before)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui.png"), full_page=True)

    # Each slider moves its own view: without the crosshair, the other two pictures stay exactly as they were.
    before = page.locator("#axial-view img").get_attribute("src")
    page.locator("#crosshair label").click()
    wait_for_new_image(page, "axial", before)
    still = {plane: picture(page, f"#{plane}-view") for plane in PLANES}
    before = page.locator("#axial-view img").get_attribute("src")
    click_slider(page, "#axial-slider", 0.7)
    wait_for_new_image(page, "axial", before)
    assert not np.array_equal(picture(page, "#axial-view"), still["axial"]), "the axial slider left its view as it was"
    for plane in ("coronal", "sagittal"):
        assert np.array_equal(picture(page, f"#{plane}-view"), still[plane]), f"the axial slider moved the {plane} view"
    before = page.locator("#axial-view img").get_attribute("src")
    page.locator("#crosshair label").click()
    wait_for_new_image(page, "axial", before)

    # A click on the axial view moves the coronal and sagittal views to that point; the axial slice stays.
    before_indices, before = slice_indices(page), page.locator("#coronal-view img").get_attribute("src")
    click_view(page, "axial", 0.3, 0.3)
    wait_for_new_image(page, "coronal", before)
    after_indices = slice_indices(page)
    assert after_indices[0] == before_indices[0]
    assert after_indices[1] != before_indices[1] and after_indices[2] != before_indices[2]

    # The wheel over a view steps its own slider one slice per event and redraws it; the page does not scroll.
    index, before = int(slice_indices(page)[0]), page.locator("#axial-view img").get_attribute("src")
    box, scrolled = page.locator("#axial-view img").bounding_box(), page.evaluate("window.scrollY")
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    for _ in range(3):
        page.mouse.wheel(0, -100)
    expect(page.locator("#axial-slider input[type=number]")).to_have_value(str(index + 3))
    wait_for_new_image(page, "axial", before, index=index + 3)
    # The readout under the views names the crosshair's voxel in the file's own order (MNI152: RAS, so x, y, z).
    sagittal, coronal = slice_indices(page)[2], slice_indices(page)[1]
    expect(page.locator("#cursor")).to_contain_text(f"voxel ({sagittal}, {coronal}, {index + 3})")
    expect(page.locator("#cursor")).to_contain_text("predicted")
    assert page.evaluate("window.scrollY") == scrolled
    before = page.locator("#axial-view img").get_attribute("src")
    page.mouse.wheel(0, 100)
    expect(page.locator("#axial-slider input[type=number]")).to_have_value(str(index + 2))
    # Wait for this slice's picture: one arriving later would be taken for the next step's (a view's address follows
    # its content, so only a different picture has a new one).
    wait_for_new_image(page, "axial", before, index=index + 2)

    # Window: a narrow one redraws the views, "Auto window" brings this volume's back (and redraws them again).
    auto_width = page.locator("#window input[type=number]").input_value()
    before = page.locator("#axial-view img").get_attribute("src")
    click_slider(page, "#window", 0.05)
    wait_for_new_image(page, "axial", before)
    before = page.locator("#axial-view img").get_attribute("src")
    page.locator("#auto-window").click()
    expect(page.locator("#window input[type=number]")).to_have_value(auto_width)
    wait_for_new_image(page, "axial", before)

    # An overlay whose data is missing says so and falls back to the classes.
    page.locator("#overlay label", has_text="Errors vs reference").click()
    expect(page.get_by_text("Errors need a reference mask")).to_be_visible(timeout=10_000)
    expect(page.locator("#overlay input[value='classes']")).to_be_checked()

    # Outlines: the class borders only; inside them the grey image is left clear.
    filled = blue(picture(page, "#axial-view"))
    before = page.locator("#axial-view img").get_attribute("src")
    page.locator("#overlay label", has_text="Outlines").click()
    wait_for_new_image(page, "axial", before)
    assert 0 < blue(picture(page, "#axial-view")) < 0.5 * filled, "outlines fill the white matter"
    before = page.locator("#axial-view img").get_attribute("src")
    page.locator("#overlay label", has_text="Classes").click()
    wait_for_new_image(page, "axial", before)

    with_grey = orange(picture(page, "#axial-view"))
    before = page.locator("#axial-view img").get_attribute("src")
    page.locator("#class-toggle label", has_text="grey matter").click()
    wait_for_new_image(page, "axial", before)
    assert orange(picture(page, "#axial-view")) < 0.2 * with_grey, "hiding grey matter left its overlay"
    before = page.locator("#axial-view img").get_attribute("src")
    page.locator("#class-toggle label", has_text="grey matter").click()
    wait_for_new_image(page, "axial", before)

    page.get_by_role("tab", name="Statistics").click()
    expect(page.locator("#class-histogram")).to_contain_text("grey matter", timeout=20_000)
    expect(page.locator("#class-histogram canvas, #class-histogram svg").first).to_be_visible()
    expect(page.locator("#intensity-histogram canvas, #intensity-histogram svg").first).to_be_visible()
    expect(page.locator("#class-table")).to_contain_text("white matter")
    page.screenshot(path=str(ARTIFACTS / "ui-statistics.png"), full_page=True)

    reference = make_reference(page, tmp_path)
    before = page.locator("#axial-view img").get_attribute("src")
    page.get_by_role("tab", name="Agreement").click()
    page.locator("#reference-input input[type=file]").set_input_files(str(reference))
    expect(page.locator("#agreement")).to_contain_text("mean (foreground)", timeout=60_000)
    expect(page.locator("#overlay input[value='errors']")).to_be_checked()
    expect(page.locator("#iou-along-z canvas, #iou-along-z svg").first).to_be_visible()
    curves = page.locator("#iou-along-z g.mark-line path")
    expect(curves).to_have_count(2)  # grey and white matter, each in its class colour
    assert sorted(curves.evaluate_all("paths => paths.map(p => p.getAttribute('stroke'))")) == ["#56b4e9", "#e69f00"]
    page.screenshot(path=str(ARTIFACTS / "ui-agreement.png"), full_page=True)

    page.get_by_role("tab", name="Slices").click()
    wait_for_new_image(page, "axial", before)  # redrawn with the errors
    assert tinted(picture(page, "#axial-view"), CONFUSED) > 100, "grey/white confusions are not coloured"
    before = page.locator("#axial-view img").get_attribute("src")
    page.locator("#class-toggle label", has_text="grey matter").click()
    wait_for_new_image(page, "axial", before)
    white_only = picture(page, "#axial-view")
    assert tinted(white_only, FALSE_POSITIVE) > 100, "white-matter false positives are not coloured"
    assert tinted(white_only, FALSE_NEGATIVE) > 100, "white-matter false negatives are not coloured"
    page.screenshot(path=str(ARTIFACTS / "ui-errors.png"), full_page=True)

    before = page.locator("#axial-view img").get_attribute("src")
    page.locator("#jump-btn").click()
    wait_for_new_image(page, "axial", before)
    expect(page.locator("#overlay input[value='uncertainty']")).to_be_checked()

    page.get_by_role("tab", name="3D surface").click()
    expect(page.locator("#surface canvas")).to_be_visible(timeout=60_000)

    # Taking the reference away empties the agreement views, and nothing breaks in the page afterwards.
    page.get_by_role("tab", name="Agreement").click()
    page.locator("#reference-input button[aria-label='Clear']").first.click()
    expect(page.locator("#agreement")).not_to_contain_text("mean (foreground)", timeout=20_000)
    drawn = page.locator("#iou-along-z g.mark-line path").evaluate_all("paths => paths.map(p => p.getAttribute('d'))")
    assert not any(drawn), f"IoU curves are still drawn without a reference: {drawn}"
    for tab in ("Slices", "Statistics", "Agreement"):
        page.get_by_role("tab", name=tab).click()
        page.wait_for_timeout(500)
    expect(page.locator("#overlay input[value='classes']")).to_be_checked()
    assert page_errors == [], f"uncaught errors in the page: {page_errors}"
    assert hosts <= {"127.0.0.1"}, f"the page reached out to {hosts - {'127.0.0.1'}}"


def make_reference(page, tmp_path: Path) -> Path:
    """The predicted mask with grey and white matter swapped in the patient's left half: known disagreements."""
    href = page.locator("#mask-output a").first.get_attribute("href")
    mask_path = tmp_path / "predicted.nii.gz"
    mask_path.write_bytes(page.request.get(href).body())
    image = nib.load(mask_path)
    labels = np.asarray(image.dataobj).copy()
    left = labels[: labels.shape[0] // 2]
    left[(left == 1) | (left == 2)] = 3 - left[(left == 1) | (left == 2)]
    reference = tmp_path / "reference.nii.gz"
    nib.save(nib.Nifti1Image(labels, image.affine, image.header), reference)
    return reference


def test_the_full_head_example_passes_qc_and_a_ct_upload_gets_a_banner_above_the_views(browser, brain_server, tmp_path):
    """The shipped chain takes a head with its skull as it comes (no banner); a CT is not a T1 MRI: a banner says so,
    above the views, as an alert."""
    from train.fullhead import HEAD_SEEDS, cached_brain
    from train.qc_cases import ct_volume

    expect = playwright.expect
    ct = ct_volume(cached_brain(None)[2], HEAD_SEEDS["test"][0], tight=True)
    path = tmp_path / "ct_head.nii.gz"
    nib.save(nib.Nifti1Image(ct.data.astype(np.int16), ct.affine), path)
    page = browser.new_context(viewport={"width": 1440, "height": 1000}).new_page()
    try:
        page.goto(f"{brain_server.url}/ui/", wait_until="load")
        expect(page.locator("#app-header")).to_contain_text("unet3d-brain-tissue", timeout=30_000)
        page.locator("#example-head-btn").click()
        expect(page.locator("#mask-output a[href*='fullhead_t1_mask.nii.gz']")).to_be_visible(
            timeout=SEGMENT_TIMEOUT_MS
        )
        expect(page.locator("#qc-banner .qc-banner")).to_be_hidden()
        page.goto(f"{brain_server.url}/ui/", wait_until="load")  # a fresh page: the volume box holds the example
        expect(page.locator("#segment-btn")).to_be_visible(timeout=30_000)
        page.locator("#volume-input input[type=file]").set_input_files(str(path))
        page.locator("#segment-btn").click()
        expect(page.locator("#mask-output a[href*='ct_head_mask.nii.gz']")).to_be_visible(timeout=SEGMENT_TIMEOUT_MS)
        banner = page.locator("#qc-banner .qc-banner")
        expect(banner).to_be_visible()
        expect(banner).to_contain_text("looks like a CT scan")
        expect(banner).to_have_attribute("role", "alert")
        banner_box, views_box = banner.bounding_box(), page.locator("#axial-view").bounding_box()
        assert banner_box["y"] + banner_box["height"] <= views_box["y"], "the banner is not above the views"
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "ui-qc-banner.png"), full_page=True)
    finally:
        page.context.close()


def test_a_reference_uploaded_before_segmenting_waits_for_its_volume(browser, tiny_server, nifti, tmp_path):
    """Volume and reference dropped together, then Segment: the agreement appears without a second upload; it stays
    through a re-segmentation of the same volume and goes when another volume is segmented."""
    expect = playwright.expect
    blob = nifti.blob()
    volume, other, reference = tmp_path / "t1.nii.gz", tmp_path / "t1_other.nii.gz", tmp_path / "t1_reference.nii.gz"
    volume.write_bytes(nifti.encode(blob))
    other.write_bytes(nifti.encode(nifti.blob(seed=1)))
    labels = ((blob > 300).astype(np.uint8) + (blob > 700)).astype(np.uint8)  # background, shell, core
    nib.save(nib.Nifti1Image(labels, nib.load(volume).affine), reference)
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{tiny_server.url}/ui/", wait_until="load")
    expect(page.locator("#segment-btn")).to_be_visible(timeout=30_000)

    page.locator("#volume-input input[type=file]").set_input_files(str(volume))
    expect(page.locator("#volume-input a[href$='/t1.nii.gz']")).to_be_visible(timeout=20_000)
    page.get_by_role("tab", name="Agreement").click()
    page.locator("#reference-input input[type=file]").set_input_files(str(reference))
    expect(page.get_by_text("Reference mask kept for t1.nii.gz")).to_be_visible(timeout=20_000)
    page.locator("#segment-btn").click()
    expect(page.locator("#agreement")).to_contain_text("mean (foreground)", timeout=60_000)
    expect(page.locator("#overlay input[value='errors']")).to_be_checked()
    expect(page.locator("#reference-input a[href$='/t1_reference.nii.gz']")).to_be_visible()
    expect(page.locator("#cursor")).to_contain_text("reference")  # the readout names the reference's class too

    page.locator("#options").get_by_text("Options").click()  # the same volume again, with TTA this time
    page.get_by_label("Test-time augmentation").check()
    page.locator("#segment-btn").click()
    expect(page.locator("#status")).to_contain_text("TTA", timeout=60_000)
    expect(page.locator("#agreement")).to_contain_text("mean (foreground)", timeout=20_000)
    expect(page.locator("#reference-input a[href$='/t1_reference.nii.gz']")).to_be_visible()

    page.locator("#volume-input button[aria-label='Clear']").first.click()
    page.locator("#volume-input input[type=file]").set_input_files(str(other))
    expect(page.locator("#volume-input a[href$='/t1_other.nii.gz']")).to_be_visible(timeout=20_000)
    page.locator("#segment-btn").click()  # another volume: its reference is not this one
    expect(page.locator("#mask-output a[href*='t1_other_mask.nii.gz']")).to_be_visible(timeout=60_000)
    expect(page.locator("#agreement")).not_to_contain_text("mean (foreground)", timeout=20_000)
    expect(page.locator("#reference-input a")).to_have_count(0)
    expect(page.locator("#overlay input[value='classes']")).to_be_checked()
    page.get_by_role("tab", name="Downloads & summary").click()  # read-only results: no remove buttons
    expect(page.locator("#downloads a[download]")).to_have_count(2)
    expect(page.locator("#downloads .label-clear-button").first).to_be_hidden()
    assert errors == [], f"uncaught errors in the page: {errors}"
    context.close()


def test_a_dicom_series_zipped_or_as_files_segments_and_offers_its_seg(browser, tiny_server, tmp_path):
    """A zipped series in the volume box, then its files in the DICOM box: the status says DICOM, the series and its
    modality, and the downloads hold the SEG."""
    expect = playwright.expect
    folder = tmp_path / "series"
    write_series(folder, *template(6))
    archive = zip_folder(folder, tmp_path / "series.zip", prefix="DICOM/")
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{tiny_server.url}/ui/", wait_until="load")
    expect(page.locator("#segment-btn")).to_be_visible(timeout=30_000)

    page.locator("#volume-input input[type=file]").set_input_files(str(archive))
    expect(page.locator("#volume-input a[href$='/series.zip']")).to_be_visible(timeout=20_000)
    page.locator("#segment-btn").click()
    expect(page.locator("#status")).to_contain_text("series.zip (DICOM MR, series ", timeout=60_000)
    page.get_by_role("tab", name="Downloads & summary").click()
    expect(page.locator("#downloads a[href$='series_seg.dcm']")).to_be_visible(timeout=20_000)
    expect(page.locator("#downloads a[download]")).to_have_count(3)

    page.locator("#dicom-input input[type=file]").set_input_files([str(p) for p in sorted(folder.iterdir())])
    expect(page.locator("#volume-input a")).to_have_count(0, timeout=20_000)  # one source at a time
    page.locator("#segment-btn").click()
    expect(page.locator("#status")).to_contain_text("T1 MPRAGE (DICOM MR, series ", timeout=60_000)
    expect(page.locator("#downloads a[href$='T1_MPRAGE_seg.dcm']")).to_be_visible(timeout=20_000)
    assert errors == [], f"uncaught errors in the page: {errors}"
    context.close()


def test_a_server_with_an_api_key_opens_the_ui_after_a_login_with_it(browser, strict_server):
    expect = playwright.expect
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{strict_server.url}/ui/", wait_until="load")
    expect(page.get_by_text("any user name, the key as password")).to_be_visible(timeout=30_000)
    expect(page.locator("#segment-btn")).to_have_count(0)
    page.get_by_label("username").fill("reviewer")
    page.get_by_label("password").fill("wrong-key")
    page.get_by_role("button", name="Login").click()
    expect(page.get_by_text("Incorrect Credentials", exact=False)).to_be_visible(timeout=10_000)
    page.get_by_label("username").fill("reviewer")  # the form is cleared after a failed attempt
    page.get_by_label("password").fill(STRICT_KEY)
    page.get_by_role("button", name="Login").click()
    expect(page.locator("#segment-btn")).to_be_visible(timeout=30_000)
    expect(page.locator("#app-header")).to_contain_text("tiny")
    context.close()


def test_the_api_docs_render_with_no_internet(browser, brain_server):
    expect = playwright.expect
    context = browser.new_context()
    outside: list[str] = []

    def only_this_server(route) -> None:
        if urlparse(route.request.url).hostname in {"127.0.0.1", "localhost"}:
            route.continue_()
        else:  # as in an air-gapped deployment
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_this_server)
    page = context.new_page()
    page.goto(f"{brain_server.url}/docs", wait_until="load")
    expect(page.locator(".opblock-summary-path", has_text="/v1/predict")).to_be_visible(timeout=30_000)
    page.goto(f"{brain_server.url}/redoc", wait_until="load")
    expect(page.get_by_text("/v1/predict").first).to_be_attached(timeout=30_000)
    expect(page.locator("h1", has_text="unet3d")).to_be_visible(timeout=30_000)  # the spec rendered, not an error
    context.close()
    assert outside == []
