"""The review's plots and tables, as the data frames Gradio's BarPlot, LinePlot and Dataframe draw.

Plain pandas from a `Review`: class volumes, the class table, intensity histograms per class, agreement with the
reference and IoU along z; plus the plots' class colours, taken from the model card.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from unet3d import ClassInfo
from unet3d.metrics import iou_along_axis

from .review import Review, default_window

HISTOGRAM_BINS = 64


def pretty(name: str) -> str:
    """Display name of a class: `grey_matter` → `grey matter`."""
    return name.replace("_", " ")


def plot_colors(classes: tuple[ClassInfo, ...]) -> dict[str, str]:
    """The card's display colour of each class, by the name the plots show."""
    return {pretty(c.name): c.color for c in classes}


def class_volumes(review: Review) -> pd.DataFrame:
    """Foreground classes and their volumes (mL), for the bar plot."""
    rows = [c for c in review.summary["classes"] if c["index"] != 0]
    return pd.DataFrame(
        {"class": [pretty(c["name"]) for c in rows], "volume (mL)": [round(c["volume_ml"], 2) for c in rows]}
    )


def class_table(review: Review) -> pd.DataFrame:
    """Voxels, mL and share of the whole scan per class (counts with thousands separators, for reading), and
    whether a class reaches the scan's edge (its volume is then a lower bound: the status line says so)."""
    rows = review.summary["classes"]
    total = sum(r["voxels"] for r in rows) or 1
    return pd.DataFrame(
        {
            "class": [pretty(r["name"]) for r in rows],
            "voxels": [f"{r['voxels']:,}" for r in rows],
            "volume (mL)": [round(r["volume_ml"], 2) for r in rows],
            "share of scan (%)": [round(100 * r["voxels"] / total, 2) for r in rows],
            "at scan edge": [_edge(r) for r in rows],
        }
    )


def _edge(row: dict[str, Any]) -> str:
    if row["index"] == 0 or row.get("touches_border") is None:  # background fills the edges; absent: nothing
        return ""
    return "yes" if row["touches_border"] else "no"


def intensity_histograms(review: Review, bins: int = HISTOGRAM_BINS) -> pd.DataFrame:
    """Per class, the share of its voxels in each intensity bin (window range), long format for a line plot."""
    low, high = default_window(review.layers.image)
    edges = np.linspace(low, high, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    image, mask = review.layers.image.reshape(-1), review.layers.mask.reshape(-1)
    frames = []
    for cls in review.classes:
        values = image[mask == cls.index]
        counts, _ = np.histogram(values, bins=edges)
        share = 100 * counts / max(int(values.size), 1)
        frames.append(
            pd.DataFrame({"intensity": centres.round(3), "voxels (%)": share.round(4), "class": pretty(cls.name)})
        )
    return pd.concat(frames, ignore_index=True)


def agreement_table(review: Review) -> pd.DataFrame:
    """Per-class Dice, IoU and volumes against the reference, plus the foreground mean (empty without a reference).

    A class absent from both masks has no Dice or IoU: those cells hold None (shown empty), as does a mean with no
    foreground class to average.
    """
    columns = ["class", "Dice", "IoU", "predicted (mL)", "reference (mL)"]
    if review.metrics is None:
        return pd.DataFrame(columns=columns)
    metrics = review.metrics
    rows: list[list[Any]] = [
        [pretty(c["name"]), _rounded(c["dice"], 4), _rounded(c["iou"], 4), round(c["volume_ml_pred"], 2),
         round(c["volume_ml_ref"], 2)]
        for c in metrics["classes"]
    ]  # fmt: skip
    rows.append(["mean (foreground)", _rounded(metrics["mean_dice"], 4), _rounded(metrics["mean_iou"], 4), None, None])
    # object columns keep None (no score) as None rather than NaN; Gradio sends null and shows an empty cell
    return pd.DataFrame(rows, columns=columns, dtype=object)


def _rounded(value: float | None, digits: int) -> float | None:
    """A score rounded for display; None stays None (a class absent from both masks has no score)."""
    return None if value is None else round(value, digits)


def iou_along_z(review: Review) -> pd.DataFrame | None:
    """IoU of each foreground class in every axial slice (z = the superior axis) where the class is present.

    None before a reference mask is attached.
    """
    reference = review.layers.reference
    if reference is None:
        return None
    frames = []
    for cls in review.classes[1:]:
        values = iou_along_axis(review.layers.mask, reference, cls.index, axis=2)
        keep = ~np.isnan(values)
        slices = np.nonzero(keep)[0].astype(np.int64)
        frames.append(pd.DataFrame({"axial slice": slices, "IoU": values[keep].round(4), "class": pretty(cls.name)}))
    return pd.concat(frames, ignore_index=True)


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
