"""Segmentation metrics: per-class Dice, IoU, HD95 (mm), IoU along an axis, volumes (mL); measurements of one mask."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from .errors import InvalidVolumeError

IMAGE_MIN_VALUES, IMAGE_MAX_EQUAL_NEIGHBOURS = 64, 0.5  # see `looks_like_an_image`


def label_problem(data: np.ndarray, num_classes: int | None = None) -> str | None:
    """What keeps `data` from being a label mask of classes 0 .. num_classes - 1 (0, 1, 2, ... when None).

    The one label rule behind every mask check (evaluate, save, reference masks, training labels): whole numbers, none
    negative, none past the last class. Returns None for a valid mask, else the rest of a sentence whose subject names
    the mask ("holds non-integer values (e.g. 0.5)"), to which each caller adds its advice. Checked without a copy
    of integer masks.
    """
    if data.dtype.kind not in "biuf":
        return f"is an array of {data.dtype}, not integer labels"
    if data.dtype.kind == "f":
        off = data != np.rint(data)
        if off.any():
            return f"holds non-integer values (e.g. {float(data.flat[int(np.argmax(off))]):g})"
    if data.size == 0:
        return None
    low, high = float(data.min()), float(data.max())
    if num_classes is None:
        return f"holds negative values (e.g. {low:g})" if low < 0 else None
    if low < 0 or high >= num_classes:
        return f"holds labels from {low:g} to {high:g}, outside 0 .. {num_classes - 1}"
    return None


def mask_labels(data: np.ndarray, name: str) -> np.ndarray:
    """The labels of a mask that `load_volume` read as float32, as int64.

    Raises:
        InvalidVolumeError: non-integer values (an image or probabilities, not a mask) or negative ones.
    """
    problem = label_problem(data)
    if problem is not None:
        raise InvalidVolumeError(
            f"{name} {problem}: expected an integer label mask (0 background, 1, 2, ...) as `unet3d predict` writes"
        )
    return np.rint(data).astype(np.int64)


def looks_like_an_image(labels: np.ndarray) -> bool:
    """Many distinct values, and most neighbouring voxels differ: intensities, not regions of a few labels.

    How `unet3d evaluate`/`stats` and `POST /v1/stats` tell an image sent as a mask from a mask.
    """
    # A label mask is made of regions: next to a foreground voxel lies mostly the same label (0.89 for the
    # MNI152 tissue mask along the first axis), while an integer image varies from voxel to voxel (0.09 for the
    # uint8 MNI152 T1). Few distinct values pass whatever their layout, so that small synthetic masks do.
    after, before = labels[1:], labels[:-1]
    touching_foreground = (after != 0) | (before != 0)
    if not touching_foreground.any():
        return False
    if float((after == before)[touching_foreground].mean()) >= IMAGE_MAX_EQUAL_NEIGHBOURS:
        return False
    return bool(np.unique(labels).size > IMAGE_MIN_VALUES)


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
        spacing_mm: voxel size, for HD95 and volumes (one size per axis).
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
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
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


def mask_statistics(
    labels: np.ndarray,
    affine: np.ndarray,
    *,
    num_classes: int,
    class_names: list[str] | None = None,
    image: np.ndarray | None = None,
) -> dict[str, Any]:
    """Per-class measurements of one label mask on its own grid: no model, no reference, no re-segmentation.

    For each class 0 .. num_classes - 1: `voxels`; `volume_ml` (from the affine's voxel volume, so an oblique or
    anisotropic grid counts right); `centroid_mm`, the mean voxel position in scanner coordinates (the affine applied);
    `bbox_ijk`, the first and last voxel index along each array axis; `touches_border`, true when the class reaches
    an outermost slice of the field of view (the structure may go on outside the scan: its volume is then a lower
    bound, not a measurement); and with an `image` on the same grid, `intensity` (mean, std, min, median, max of the
    class's voxels). A class absent from the mask has 0 voxels and None for the rest.

    Args:
        labels: `(I, J, K)` whole-number class indices below `num_classes`.
        affine: the mask's 4×4 voxel-to-scanner (mm) matrix.
        num_classes: classes including background (index 0); at least 2.
        class_names: one name per class (default class_0, class_1, ...).
        image: `(I, J, K)` intensities on the mask's grid.

    Raises:
        ValueError: labels that are not whole numbers below `num_classes`, an image of another shape, or an
            argument out of range.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"expected an (I, J, K) mask, got {labels.ndim} dimensions")
    if num_classes < 2:
        raise ValueError(f"num_classes counts background too: at least 2, got {num_classes}")
    problem = label_problem(labels, num_classes)
    if problem is not None:
        raise ValueError(f"the mask {problem} (num_classes {num_classes}): expected integer class indices")
    if image is not None and np.shape(image) != labels.shape:
        raise ValueError(f"image shape {np.shape(image)} differs from mask shape {labels.shape}")
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"class_names names {len(class_names)} classes, num_classes is {num_classes}")
    names = class_names or [f"class_{c}" for c in range(num_classes)]
    affine = np.asarray(affine, dtype=np.float64)
    voxel_ml = float(abs(np.linalg.det(affine[:3, :3])) / 1000.0)
    index = np.rint(labels).astype(np.int64) if labels.dtype.kind == "f" else labels.astype(np.int64, copy=False)
    counts = np.bincount(index.ravel(), minlength=num_classes)
    # find_objects boxes labels 1, 2, ... (0 is its background); the background's box is found from its projections
    boxes = [_box(index == 0) if counts[0] else None, *ndimage.find_objects(index, max_label=num_classes - 1)]
    classes = [
        _class_measures(index, c, names[c], int(counts[c]), boxes[c], affine, voxel_ml, image)
        for c in range(num_classes)
    ]
    return {
        "shape": list(labels.shape),
        "voxel_volume_ml": voxel_ml,
        "classes": classes,
        "foreground_volume_ml": round(float(counts[1:num_classes].sum()) * voxel_ml, 6),
    }


def _class_measures(
    index: np.ndarray,
    cls: int,
    name: str,
    voxels: int,
    box: tuple[slice, ...] | None,
    affine: np.ndarray,
    voxel_ml: float,
    image: np.ndarray | None,
) -> dict[str, Any]:
    measures: dict[str, Any] = {"index": cls, "name": name, "voxels": voxels, "volume_ml": round(voxels * voxel_ml, 6)}
    if box is None:  # absent
        absent = {"centroid_mm": None, "bbox_ijk": None, "touches_border": None}
        return {**measures, **absent, **({"intensity": None} if image is not None else {})}
    # Inside the class's box only: a small structure in a big volume costs what the structure costs.
    inside = index[box] == cls
    # The mean index along each axis from the class's profile along it: no full-size coordinate arrays.
    profiles = [inside.sum(axis=tuple(a for a in range(3) if a != axis)) for axis in range(3)]
    centre = np.array(
        [s.start + float(np.dot(np.arange(p.size), p)) / voxels for s, p in zip(box, profiles, strict=True)]
    )
    centroid = affine[:3, :3] @ centre + affine[:3, 3]
    bbox = [[s.start, s.stop - 1] for s in box]
    touches = any(low == 0 or high == size - 1 for (low, high), size in zip(bbox, index.shape, strict=True))
    measures.update(centroid_mm=[round(float(v), 3) for v in centroid], bbox_ijk=bbox, touches_border=touches)
    if image is not None:
        values = np.asarray(image)[box][inside]
        measures["intensity"] = {  # float64 sums over the (float32) values, without a float64 copy of them
            "mean": float(values.mean(dtype=np.float64)),
            "std": float(values.std(dtype=np.float64)),
            "min": float(values.min()),
            "median": float(np.median(values)),
            "max": float(values.max()),
        }
    return measures


def _box(voxels: np.ndarray) -> tuple[slice, slice, slice]:
    """The bounding box of the true voxels of a non-empty 3D boolean array, as slices (what find_objects gives)."""
    spans = []
    for axis in range(3):
        hits = np.flatnonzero(voxels.any(axis=tuple(a for a in range(3) if a != axis)))
        spans.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return spans[0], spans[1], spans[2]


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
