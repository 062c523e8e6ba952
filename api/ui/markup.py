"""The page's HTML and Markdown: header, legend, status line, the crosshair readout and the notices around them."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from unet3d import ClassInfo

from ..uploads import display_name
from .figures import pretty
from .rendering import CONFUSED, FALSE_NEGATIVE, FALSE_POSITIVE
from .review import Review, cursor_info

WELCOME = (
    "Upload a T1-weighted volume (`.nii` / `.nii.gz`, or a DICOM series: a `.zip` or its `.dcm` files) or try an "
    "example (the **MNI152** brain or a **full head**), then press **Segment**. "
    "Slices, statistics, agreement with a reference mask and a 3D surface appear here."
)
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


CURSOR_HINT = "Once a volume is segmented, the voxel under the crosshair is described here."


def cursor_html(review: Review | None, point: tuple[int, int, int]) -> str:
    """One line on the voxel under the crosshair (canonical `point`, x y z): its index in the uploaded file, scanner
    mm, intensity and classes."""
    if review is None:
        return f'<div class="cursor">{CURSOR_HINT}</div>'
    info = cursor_info(review, point)
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


def source_text(source: dict[str, Any] | None) -> str:
    """For a DICOM input: " (DICOM MR, series 1.2.3, 176 images; 1 series left out: localizer)"; "" for NIfTI."""
    if not source or source.get("format") != "dicom":
        return ""
    text = f"DICOM {source.get('modality') or ''}, series {source.get('series_uid')}, {source.get('images')} images"
    left = source.get("ignored_series") or []
    if left:
        reasons = "; ".join(sorted({str(s["reason"]) for s in left}))
        text += f"; {len(left)} series left out: {reasons}"
    return f" ({html.escape(' '.join(text.split()))})"


def status_markdown(review: Review) -> str:
    """One line: file, grid, spacing, orientation, time and device; a second when a class is cut by the scan's edge."""
    s = review.summary
    shape = " × ".join(str(n) for n in s["input_shape"][:3])
    spacing = " × ".join(f"{v:.2f}" for v in s["spacing_mm"])
    seconds = s["runtime_ms"] / 1000
    if s["device"] == "stored":  # a stored case's mask revision (casereview.stored_prediction): nothing ran
        done = f"case {review.case_id}, mask revision {review.revision}"
    else:
        done = f"segmented in {seconds:.1f} s on {s['device']} ({s['mode']} pass{', TTA' if s.get('tta') else ''})"
    line = (
        f"**{html.escape(s['filename'])}**{source_text(s.get('source'))} · {shape} voxels · {spacing} mm · "
        f"{s['orientation']} · {done}"
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


def qc_banner_html(summary: dict[str, Any]) -> str:
    """The QC warnings of a segmentation as a banner (role "alert"); "" when nothing looked wrong."""
    warnings = (summary.get("qc") or {}).get("warnings") or []
    if not warnings:
        return ""
    score = summary["qc"].get("score")
    title = "Check this segmentation before trusting it" + (f" (QC score {score:.2f})" if score is not None else "")
    items = "".join(f"<li>{html.escape(str(w))}</li>" for w in warnings)
    return f'<div class="qc-banner" role="alert"><div class="qc-title">{html.escape(title)}</div><ul>{items}</ul></div>'
