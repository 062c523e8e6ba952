"""Segmentation metrics: a prediction against a reference, per class: Dice, IoU, HD95 (mm), IoU along an axis, volumes.

Measurements of one mask on its own (volumes, centroids, boxes, intensities) live in `unet3d.stats`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from .stats import label_problem, voxel_volume_ml

__all__ = ["dice", "evaluate", "hd95", "iou", "iou_along_axis", "mean_of"]


def _class_masks(pred: np.ndarray, target: np.ndarray, cls: int) -> tuple[np.ndarray, np.ndarray]:
    """The voxels of class `cls` in each mask; the masks must share a shape (else a score would be meaningless)."""
    if np.shape(pred) != np.shape(target):
        raise ValueError(f"prediction shape {np.shape(pred)} differs from reference shape {np.shape(target)}")
    return np.asarray(pred) == cls, np.asarray(target) == cls


def dice(pred: np.ndarray, target: np.ndarray, cls: int) -> float:
    """Dice of one class; 1.0 when the class is absent from both.

    1.0 keeps a per-case average over classes finite (training validation). `evaluate` reports such a class as
    None instead, and leaves it out of its means: there was nothing to segment, so there is no score.

    Raises:
        ValueError: the masks differ in shape.
    """
    p, t = _class_masks(pred, target, cls)
    total = int(p.sum()) + int(t.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(p, t).sum()) / total


def iou(pred: np.ndarray, target: np.ndarray, cls: int) -> float:
    """Intersection over union of one class; 1.0 when absent from both (see `dice`)."""
    p, t = _class_masks(pred, target, cls)
    union = int(np.logical_or(p, t).sum())
    return 1.0 if union == 0 else int(np.logical_and(p, t).sum()) / union


def iou_along_axis(pred: np.ndarray, target: np.ndarray, cls: int, axis: int = -1) -> np.ndarray:
    """IoU of one class in every slice along `axis`; NaN where the class is absent from both."""
    p, t = _class_masks(pred, target, cls)
    axis = _axis(axis, p.ndim)
    others = tuple(a for a in range(p.ndim) if a != axis)
    inter = np.logical_and(p, t).sum(axis=others).astype(np.float64)
    union = np.logical_or(p, t).sum(axis=others).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, np.nan)


def hd95(pred: np.ndarray, target: np.ndarray, cls: int, spacing_mm: tuple[float, ...] = (1.0, 1.0, 1.0)) -> float:
    """95th percentile symmetric surface distance (mm) of one class.

    Returns 0.0 when the class is absent from both (`evaluate` reports None), and inf when it is absent from
    exactly one.

    Raises:
        ValueError: the masks differ in shape, or `spacing_mm` does not give one size per mask axis.
    """
    p, t = _class_masks(pred, target, cls)
    _check_spacing(spacing_mm, p.ndim)
    if not p.any() and not t.any():
        return 0.0
    if not p.any() or not t.any():
        return float("inf")
    p_surface = p & ~ndimage.binary_erosion(p)
    t_surface = t & ~ndimage.binary_erosion(t)
    to_t = ndimage.distance_transform_edt(~t_surface, sampling=spacing_mm)
    to_p = ndimage.distance_transform_edt(~p_surface, sampling=spacing_mm)
    distances = np.concatenate([to_t[p_surface], to_p[t_surface]])
    return float(np.percentile(distances, 95))


def evaluate(
    pred: np.ndarray,
    target: np.ndarray,
    *,
    num_classes: int,
    spacing_mm: tuple[float, ...] = (1.0, 1.0, 1.0),
    affine: npt.ArrayLike | None = None,
    class_names: list[str] | None = None,
    with_hd95: bool = True,
) -> dict[str, Any]:
    """Per-class Dice, IoU, HD95 and volumes, plus means over the foreground classes (background excluded).

    A class absent from both masks has no Dice, IoU or HD95: they are None and the means leave it out. The means
    are None when every foreground class is absent from both. HD95 is also None when only one mask holds the
    class (its Dice is then 0).

    Args:
        pred, target: `(I, J, K)` integer label arrays on the same grid, labels 0 .. num_classes - 1.
        num_classes: classes including background (index 0); at least 2.
        spacing_mm: voxel size along each array axis, for HD95 (and for volumes without `affine`).
        affine: the masks' 4×4 voxel-to-scanner (mm) matrix: volumes come from its determinant (`voxel_volume_ml`),
            right on oblique and sheared grids too; default an axis-aligned grid of `spacing_mm`. The arrays may be
            in another axis order of the same grid (permuting or flipping axes keeps a voxel's volume).
        class_names: one name per class.

    Raises:
        ValueError: shapes differ, labels are not whole numbers below `num_classes`, or an argument is out of range.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {target.shape}")
    if num_classes < 2:
        raise ValueError(f"num_classes counts background too: at least 2, got {num_classes}")
    _check_spacing(spacing_mm, pred.ndim)
    for mask, which in ((pred, "prediction"), (target, "reference")):
        problem = label_problem(np.asarray(mask), num_classes)
        if problem is not None:
            raise ValueError(f"the {which} {problem} (num_classes {num_classes}): expected integer class indices")
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"class_names names {len(class_names)} classes, num_classes is {num_classes}")
    names = class_names or [f"class_{c}" for c in range(num_classes)]
    voxel_ml = voxel_volume_ml(np.diag(spacing_mm) if affine is None else affine)
    per_class = []
    for cls in range(num_classes):
        scores = _class_scores(pred, target, cls, spacing_mm, voxel_ml, with_hd95=with_hd95 and cls > 0)
        per_class.append({"index": cls, "name": names[cls], **scores})
    foreground = per_class[1:]
    return {
        "classes": per_class,
        "mean_dice": mean_of([c["dice"] for c in foreground]),
        "mean_iou": mean_of([c["iou"] for c in foreground]),
        "iou_along_last_axis": {
            names[c]: [None if np.isnan(v) else round(float(v), 6) for v in iou_along_axis(pred, target, c)]
            for c in range(1, num_classes)
        },
    }


def _class_scores(
    pred: np.ndarray, target: np.ndarray, cls: int, spacing_mm: tuple[float, ...], voxel_ml: float, *, with_hd95: bool
) -> dict[str, Any]:
    p, t = pred == cls, target == cls
    is_present = bool(p.any() or t.any())
    scores: dict[str, Any] = {
        "dice": dice(pred, target, cls) if is_present else None,
        "iou": iou(pred, target, cls) if is_present else None,
        "volume_ml_pred": float(p.sum()) * voxel_ml,
        "volume_ml_ref": float(t.sum()) * voxel_ml,
    }
    if with_hd95:  # undefined (None) unless both masks hold the class: `hd95`'s inf is not JSON
        both = bool(p.any() and t.any())
        scores["hd95_mm"] = hd95(pred, target, cls, spacing_mm) if both else None
    return scores


def mean_of(values: list[float | None]) -> float | None:
    """Mean of the defined values (None = a class absent from both masks); None when none is defined."""
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def _axis(axis: int, ndim: int) -> int:
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} does not exist in a {ndim}D mask")
    return axis % ndim


def _check_spacing(spacing_mm: tuple[float, ...], ndim: int) -> None:
    if len(spacing_mm) != ndim:
        raise ValueError(f"spacing_mm gives {len(spacing_mm)} sizes for a {ndim}D mask: give one per axis")
