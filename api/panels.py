"""Presentation of the review UI: header and legend HTML, and the values shown after each step."""

from __future__ import annotations

import html
import math
import uuid
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from unet3d import ClassInfo

from .callbacks import ReviewCallbacks, ViewInputs, initial_indices
from .mesh import class_surface, with_nested_translucency, write_glb
from .review import (
    Review,
    agreement_table,
    class_table,
    cursor_info,
    default_window,
    intensity_histograms,
    iou_along_z,
    pretty,
)
from .service import SegmentationService
from .uploads import display_name
from .views import CONFUSED, FALSE_NEGATIVE, FALSE_POSITIVE, Overlay

OVERLAY_CHOICES = [
    ("Classes", "classes"), ("Outlines", "outlines"), ("Errors vs reference", "errors"), ("Uncertainty", "uncertainty"),
]  # fmt: skip
WELCOME = (
    "Upload a T1-weighted volume (`.nii` / `.nii.gz`) or try the **MNI152 example**, then press **Segment**. "
    "Slices, statistics, agreement with a reference mask and a 3D surface appear here."
)
# Keys of `startup` and `present`, in the order ui.py lists the matching output components.
STARTUP_KEYS = ("header", "legend", "shown", "surface_classes", "class_plot", "intensity_plot", "iou_plot")
PRESENT_KEYS = (
    "status", "legend", "axial_slider", "coronal_slider", "sagittal_slider", "window", "level", "overlay",
    "axial", "coronal", "sagittal", "class_plot", "class_table", "intensity_plot", "downloads", "agreement",
    "iou_plot", "reference", "review", "reference_owner",
)  # fmt: skip
_LOGO = (
    '<svg width="40" height="40" viewBox="0 0 64 64" aria-hidden="true"><rect width="64" height="64" rx="14" '
    'fill="#0f172a"/><ellipse cx="32" cy="33" rx="22" ry="24" fill="#e69f00"/><ellipse cx="32" cy="34" rx="14" '
    'ry="16" fill="#56b4e9"/><path d="M32 10v47" stroke="#0f172a" stroke-width="3"/></svg>'
)


def header_html(info: dict[str, Any] | None) -> str:
    """Title, model identity and the intended-use badge."""
    if info is None:
        detail = "loading the model…"
    else:
        parts = [
            f"{info.get('name', 'model')} v{info.get('version', '?')}",
            _segments(info.get("classes", [])),
            f"device {info.get('device', '?')}",
            f"revision {str(info.get('revision', ''))[:12]}",
        ]
        detail = " · ".join(html.escape(p) for p in parts)
    use = html.escape(str((info or {}).get("intended_use", "research/demo, not for clinical use")))
    return (
        f'<div class="brand">{_LOGO}<div><h1>UNet3D segmentation review<span class="badge">{use}</span></h1>'
        f'<div class="sub">{detail}</div></div></div>'
    )


def _segments(classes: list[dict[str, Any]]) -> str:
    """What the model segments, as the legend lists it (background is not a segment): names, or a count if many."""
    names = [pretty(str(c.get("name", "?"))) for c in classes if c.get("index") != 0]
    if not names or len(names) > 4:
        return f"{len(names)} classes + background"
    return ", ".join(names)


def legend_html(classes: tuple[ClassInfo, ...] | None, volumes_ml: list[float] | None = None) -> str:
    """Class swatches (with volumes once known), error colours and the uncertainty ramp."""
    rows = []
    for position, cls in enumerate(classes or ()):
        if cls.index == 0:
            continue
        value = f"{volumes_ml[position]:.1f} mL" if volumes_ml else ""
        rows.append(_legend_row(cls.color, pretty(cls.name), value))
    return (
        '<div class="legend"><div class="legend-title">Classes</div>' + "".join(rows)
        + '<div class="legend-title">Errors vs reference</div>'
        + _legend_row(FALSE_POSITIVE, "false positive (extra)", "")
        + _legend_row(FALSE_NEGATIVE, "false negative (missed)", "")
        + _legend_row(CONFUSED, "wrong class (both shown)", "")
        + '<div class="legend-title">Uncertainty (entropy)</div><div class="ramp"></div>'
        + '<div class="ramp-labels"><span>certain (no tint)</span><span>most uncertain</span></div></div>'
    )  # fmt: skip


def _legend_row(color: str, name: str, value: str) -> str:
    return (
        f'<div class="row"><span class="swatch" style="background:{html.escape(color)}"></span>'
        f'<span class="name">{html.escape(name)}</span><span class="value">{html.escape(value)}</span></div>'
    )


def startup(service: SegmentationService | None) -> list[Any]:
    """Values set when a page loads: header, legend, class toggles and plot colours from the model card."""
    if service is None:
        return [header_html(None), legend_html(None), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()]
    card = service.segmenter.card
    choices = [(pretty(c.name), c.name) for c in card.classes]
    foreground = [c.name for c in card.classes if c.index != 0]
    colors = {pretty(c.name): c.color for c in card.classes}
    return [
        header_html(service.info()),
        legend_html(card.classes),
        # Foreground classes only: background is what the overlay leaves uncovered.
        gr.CheckboxGroup(choices=[c for c in choices if c[1] in foreground], value=foreground),
        gr.CheckboxGroup(choices=[c for c in choices if c[1] in foreground], value=foreground),
        gr.BarPlot(color_map=colors, sort=[pretty(name) for name in foreground]),
        gr.LinePlot(color_map=colors),
        gr.LinePlot(color_map=colors),
    ]


def present(
    review: Review, cb: ReviewCallbacks, opacity: float, shown: list[str], crosshair: bool,
    reference: Any = None, owner: Path | None = None, overlay: Overlay = "classes",
) -> list[Any]:  # fmt: skip
    """Everything shown after a segmentation, rendered from the new review (values in `PRESENT_KEYS` order).

    A reference mask in its box that belongs to this volume (`owner`, see `ReviewCallbacks.reference_owner`) is
    compared with the new mask and the views open on the errors; a reference that belongs to another volume is taken
    out of the box. Otherwise the chosen `overlay` stays, unless the new review lacks its data.
    """
    review, compared = with_reference(review, cb, reference, owner)
    window, level = auto_window(review)
    low, high, step = window_range(review)
    indices = initial_indices(review)
    if compared:
        overlay = "errors"
    elif missing_overlay_data(review, overlay):
        overlay = "classes"
    inputs = ViewInputs(indices, window, level, opacity, tuple(shown or ()), overlay, crosshair)
    axial, coronal, sagittal = cb.render(review, inputs)
    x, y, z = review.layers.shape
    volumes = [c["volume_ml"] for c in review.summary["classes"]]
    values = {
        "status": status_markdown(review),
        "legend": legend_html(review.classes, volumes),
        "axial_slider": gr.Slider(minimum=0, maximum=z - 1, value=indices[0], interactive=True),
        "coronal_slider": gr.Slider(minimum=0, maximum=y - 1, value=indices[1], interactive=True),
        "sagittal_slider": gr.Slider(minimum=0, maximum=x - 1, value=indices[2], interactive=True),
        "window": gr.Slider(minimum=step, maximum=_snap(high - low, step), value=window, step=step, interactive=True),
        "level": gr.Slider(minimum=low, maximum=high, value=level, step=step, interactive=True),
        "overlay": overlay,
        "axial": axial,
        "coronal": coronal,
        "sagittal": sagittal,
        "class_plot": class_volumes(review),
        "class_table": class_table(review),
        "intensity_plot": intensity_histograms(review),
        "downloads": [str(path) for path in review.files],
        "agreement": agreement_table(review),
        "iou_plot": iou_plot(review),
        "reference": gr.skip() if compared else None,
        "review": review,
        "reference_owner": review.source if compared else None,
    }  # fmt: skip
    return [values[key] for key in PRESENT_KEYS]


def with_reference(review: Review, cb: ReviewCallbacks, reference: Any, owner: Path | None) -> tuple[Review, bool]:
    """`review` compared with `reference` when that reference belongs to its volume; and whether it was."""
    if not reference or (owner is not None and owner != review.source):
        return review, False
    try:
        return cb.attach(review, reference) or review, True
    except gr.Error as refused:  # say why; the box is emptied (the file was not used)
        gr.Warning(refused.message)
        return review, False


CURSOR_HINT = "Once a volume is segmented, the voxel under the crosshair is described here."


def cursor_html(review: Review | None, axial: int, coronal: int, sagittal: int) -> str:
    """One line on the voxel under the crosshair: its index in the uploaded file, scanner mm, intensity and classes."""
    if review is None:
        return f'<div class="cursor">{CURSOR_HINT}</div>'
    info = cursor_info(review, (int(sagittal), int(coronal), int(axial)))
    colours = {c.name: c.color for c in review.classes}

    def named(name: str) -> str:
        swatch = f'<span class="swatch" style="background:{html.escape(colours[name])}"></span>'
        return f"{swatch}{html.escape(pretty(name))}"

    i, j, k = info.voxel
    x, y, z = info.world_mm
    parts = [
        f'voxel <b title="index in the uploaded file">({i}, {j}, {k})</b>',
        f'<span title="scanner coordinates (the file\'s affine)">({x:.1f}, {y:.1f}, {z:.1f}) mm</span>',
        f"intensity {info.intensity:.4g}",
        f"predicted {named(info.predicted)}",
    ]
    if info.reference is not None:
        agree = info.reference == info.predicted
        parts.append(f'reference {named(info.reference)} <span class="{"agree" if agree else "disagree"}">'
                     f'{"agrees" if agree else "disagrees"}</span>')  # fmt: skip
    if info.uncertainty is not None:
        parts.append(f"uncertainty {info.uncertainty:.2f}")
    return '<div class="cursor">' + " · ".join(parts) + "</div>"


def reference_waits(volume: Path | None) -> str:
    """What the user is told when a reference mask waits for its volume's segmentation."""
    if volume is None:
        return "Reference mask kept: it is compared with the next segmentation as soon as that finishes."
    return (
        f"Reference mask kept for {display_name(volume.name)}: it is compared with that volume's segmentation as soon "
        "as it finishes (press Segment if it has not started)."
    )


def iou_plot(review: Review) -> pd.DataFrame:
    """The IoU-along-z curves; without a reference, a frame that draws nothing but the axes and the class legend.

    Not None: Gradio 6.31's plot throws in the page ("reading 'offsetWidth'") once a shown chart is set to None.
    Not an empty frame either: the chart keeps the colour scale of the data it was first drawn from, so curves added
    to a chart first drawn empty have no colour. Each foreground class gets two undrawn points (IoU missing) at the
    first and the last axial slice.
    """
    curves = iou_along_z(review)
    if curves is not None:
        return curves
    names = [pretty(c.name) for c in review.classes if c.index != 0]
    last = review.layers.shape[2] - 1
    return pd.DataFrame(
        {"axial slice": [0, last] * len(names), "IoU": [float("nan")] * 2 * len(names),
         "class": [name for name in names for _ in range(2)]}
    )  # fmt: skip


def missing_overlay_data(review: Review | None, overlay: str) -> str | None:
    """Why `overlay` cannot be shown for this review (None when it can)."""
    if review is None or overlay in {"classes", "outlines"}:
        return None
    if overlay == "errors" and review.layers.reference is None:
        return "Errors need a reference mask: upload one in the Agreement tab. Showing the classes."
    if overlay == "uncertainty" and review.layers.entropy is None:
        return "No uncertainty map: tick 'Uncertainty map' and segment again. Showing the classes."
    return None


def auto_window(review: Review) -> tuple[float, float]:
    """(width, level) of the default grey window for this volume (percentiles of the image), on the sliders' steps."""
    low, high = default_window(review.layers.image)
    step = window_range(review)[2]  # the window fits the sliders: default_window lies within their range
    return max(_snap(float(high - low), step), step), _snap(float(low + high) / 2, step)


def window_range(review: Review) -> tuple[float, float, float]:
    """(lowest, highest, step) of the window sliders: the image's intensity range on a round step (1, 2 or 5 × 10ⁿ,
    about 1/500 of the range), so that the sliders show 0.5 or 120, not 0.5282213745117188."""
    image = review.layers.image
    low, high = default_window(image)  # wider than the image only when it is constant
    smallest, largest = min(float(image.min()), low), max(float(image.max()), high)
    wanted = (largest - smallest) / 500
    power = 10.0 ** math.floor(math.log10(wanted))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= wanted * (1 - 1e-9))
    step = _snap(step, step)
    return _snap(math.floor(smallest / step) * step, step), _snap(math.ceil(largest / step) * step, step), step


def _snap(value: float, step: float) -> float:
    """`value` on the grid of `step`, written with no more decimals than the step has."""
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return round(round(value / step) * step, decimals)


def class_volumes(review: Review) -> pd.DataFrame:
    """Foreground classes and their volumes (mL), for the bar plot."""
    rows = [c for c in review.summary["classes"] if c["index"] != 0]
    return pd.DataFrame(
        {"class": [pretty(c["name"]) for c in rows], "volume (mL)": [round(c["volume_ml"], 2) for c in rows]}
    )


def status_markdown(review: Review) -> str:
    """One line: file, grid, spacing, orientation, time and device; a second when a class is cut by the scan's edge."""
    s = review.summary
    shape = " × ".join(str(n) for n in s["input_shape"][:3])
    spacing = " × ".join(f"{v:.2f}" for v in s["spacing_mm"])
    seconds = s["runtime_ms"] / 1000
    line = (
        f"**{html.escape(s['filename'])}** · {shape} voxels · {spacing} mm · {s['orientation']} · "
        f"segmented in {seconds:.1f} s on {s['device']} ({s['mode']} pass{', TTA' if s.get('tta') else ''})"
    )
    cut = [pretty(c["name"]) for c in s["classes"][1:] if c.get("touches_border")]
    if not cut:
        return line
    if len(cut) == 1:
        note = f"{cut[0]} reaches the edge of the scan: it may go on outside it, so its volume is a lower bound."
    else:
        names = ", ".join(cut)
        note = f"{names} reach the edge of the scan: they may go on outside it, so their volumes are lower bounds."
    return f"{line}  \n{note}"


def surface_file(review: Review | None, names: list[str] | None) -> str | None:
    """A .glb with the surfaces of the chosen classes (None when nothing is chosen or segmented)."""
    if review is None or not names:
        return None
    chosen = [c for c in review.classes if c.name in names and c.index != 0]
    voxels = {c["index"]: c["voxels"] for c in review.summary["classes"]}
    pairs = [(class_surface(review.layers.mask, c.index, review.layers.spacing_mm, color=c.color), c) for c in chosen]
    kept = [(s, c) for s, c in pairs if s is not None]
    if not kept:
        return None
    surfaces = with_nested_translucency([s for s, _ in kept], [voxels[c.index] for _, c in kept])
    return str(write_glb(surfaces, review.workdir / f"surface-{uuid.uuid4().hex[:8]}.glb"))
