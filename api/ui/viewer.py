"""The browser viewer (NiiVue in WebGL): its assets, its markup in the page, and what it is told about a case.

The page loads `static/viewer.js` and `static/viewer.css` (through `HEAD`, given to mount_gradio_app), and the viewer
loads NiiVue from `viewer-assets/niivue.umd.js` when it starts. The viewer is a `gr.HTML` whose markup never changes
(toolbar and canvas); its value is the open case (`payload`), which `viewer.js` watches. A saved correction is told
back with the component's `submit` event, whose data carry the new revision and version.
"""

from __future__ import annotations

import html
import logging
from typing import Any

from fastapi import HTTPException
from fastapi.responses import FileResponse

from unet3d import ClassInfo

from ..cases.schemas import CaseDetail
from . import bundle
from .casefiles import PREFIX, mask_url, volume_url
from .figures import pretty

logger = logging.getLogger(__name__)

ASSETS = "/viewer-assets"
_OWN = {"viewer.js": "text/javascript", "viewer.css": "text/css"}
HEAD = (
    f'<link rel="stylesheet" href="{ASSETS.lstrip("/")}/viewer.css">'
    f'<script src="{ASSETS.lstrip("/")}/viewer.js" defer></script>'
)
# Runs when the component renders: hand the viewer its element, the event trigger and the watched value.
JS_ON_LOAD = (
    "(function start() { if (window.unet3dViewer) window.unet3dViewer.mount(element, trigger, props, watch); "
    "else setTimeout(start, 50); })();"
)
SHORTCUTS = (
    "<b>a</b> accept · <b>n</b> needs correction · <b>r</b> reject · <b>j</b> / <b>k</b> next / previous case · "
    "<b>v</b> navigate · <b>b</b> paint · <b>f</b> fill · <b>e</b> erase · <b>Ctrl+Z</b> / <b>Ctrl+Y</b> undo / redo "
    "· right-drag: window/level · wheel: slices"
)


def viewer_markup() -> str:
    """The viewer's toolbar, canvas and readout (its `data-missing` is what it says without the NiiVue bundle).

    Gradio reads it as a JavaScript template string: it must hold no backtick and no `${`.
    """
    missing = html.escape(bundle.INSTALL_HINT[:1].upper() + bundle.INSTALL_HINT[1:] + ".")
    tools = "".join(
        f'<label><input type="radio" name="nv-tool" value="{tool}"{" checked" if tool == "navigate" else ""}>'
        f"{label}</label>"
        for tool, label in (("navigate", "Navigate (v)"), ("paint", "Paint (b)"), ("fill", "Fill (f)"),
                            ("erase", "Erase (e)"))
    )  # fmt: skip
    return f"""
<div class="nv-viewer" data-missing="{missing}">
  <div class="nv-toolbar">
    <fieldset class="nv-tools" aria-label="Tool">{tools}</fieldset>
    <label>Class <select class="nv-class" aria-label="Class to paint"></select></label>
    <label>Brush <input class="nv-pen" type="number" min="1" max="25" value="3"
      aria-label="Brush size (voxels)"></label>
    <button type="button" class="nv-undo" disabled>Undo</button>
    <button type="button" class="nv-redo" disabled>Redo</button>
    <label>Opacity <input class="nv-opacity" type="range" min="0" max="1" step="0.05" value="0.5"></label>
    <label>Window <input class="nv-low" type="range" aria-label="Window low">
      <input class="nv-high" type="range" aria-label="Window high"></label>
    <button type="button" class="nv-auto">Auto window</button>
    <label><input class="nv-render" type="checkbox" checked> 3D</label>
    <button type="button" class="nv-save" disabled>Save correction</button>
  </div>
  <div class="nv-message" hidden></div>
  <div class="nv-stage"><canvas class="nv-canvas" aria-label="Case viewer: three views and a 3D render"></canvas></div>
  <div class="nv-status"><span class="nv-location"></span><span class="nv-changes"></span></div>
  <div class="nv-keys">{SHORTCUTS}</div>
</div>"""


def payload(
    case: CaseDetail, classes: tuple[ClassInfo, ...], window: tuple[float, float], author: str | None
) -> dict[str, Any]:
    """What the viewer needs to show a case's latest revision and save the next one.

    Args:
        case: the case as stored now.
        classes: its classes with their display colours.
        window: the grey window to open with (low, high intensity).
        author: the name a save is recorded under when there is no login (None: the signed-in user).
    """
    revision = case.latest_revision
    return {
        "case": case.id, "name": case.name, "etag": case.etag, "version": case.version, "revision": revision,
        "volume": volume_url(case.id), "volumeName": _nifti_name(case.volume_name),
        "mask": mask_url(case.id, revision), "save": f"{PREFIX.lstrip('/')}/{case.id}/masks",
        "classes": [{"index": c.index, "label": pretty(c.name), "color": c.color} for c in classes],
        "window": [float(window[0]), float(window[1])], "author": author,
    }  # fmt: skip


def install_viewer_assets(gradio_app: Any) -> None:
    """Serve viewer.js, viewer.css and the NiiVue bundle from the UI mount (no CDN), and say at start-up if NiiVue is
    missing. They hold no data, so they need no login (the login page loads them too)."""
    if not bundle.installed():
        logger.warning("unet3d: %s", bundle.INSTALL_HINT)

    def asset(name: str) -> FileResponse:
        if name == "niivue.umd.js" and bundle.installed():
            return FileResponse(bundle.NIIVUE_SCRIPT, media_type="text/javascript",
                                headers={"Cache-Control": "public, max-age=86400"})  # fmt: skip
        if name in _OWN:
            return FileResponse(bundle.STATIC / name, media_type=_OWN[name], headers={"Cache-Control": "no-cache"})
        detail = bundle.INSTALL_HINT if name == "niivue.umd.js" else "no such asset"
        raise HTTPException(status_code=404, detail=detail)

    gradio_app.add_api_route(f"{ASSETS}/{{name}}", asset, methods=["GET"], include_in_schema=False)


def _nifti_name(name: str) -> str:
    """A file name NiiVue reads the right format from (.nii or .nii.gz)."""
    return name if name.lower().endswith((".nii", ".nii.gz")) else "volume.nii.gz"
