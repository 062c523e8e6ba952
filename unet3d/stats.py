"""Mask measurement: the millilitre, the label-mask rules and their messages, and per-class statistics of one mask.

`unet3d stats`, `unet3d evaluate`, `POST /v1/stats` and the review UI's reference mask all read label masks through
the rules here, so that each front end refuses the same files with the same words (only the name of the option
that vouches for a mask differs: `--num-classes` on the command line, `num_classes` over HTTP).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from .errors import LabelMaskError

__all__ = [
    "LabelMasks",
    "image_free_labels",
    "label_masks",
    "label_problem",
    "mask_labels",
    "mask_statistics",
    "voxel_volume_ml",
]

IMAGE_MIN_VALUES, IMAGE_MAX_EQUAL_NEIGHBOURS = 64, 0.5  # see `looks_like_an_image`
_EXPECTED = "expected an integer label mask (0 background, 1, 2, ...) such as unet3d's predictions"


def voxel_volume_ml(affine: npt.ArrayLike) -> float:
    """The volume of one voxel in millilitres: |det| of the voxel-to-scanner matrix (mm³) / 1000.

    The one definition of a millilitre in unet3d: right on oblique, anisotropic and sheared grids alike (the
    product of the voxel edge lengths is not, once the axes are not perpendicular).

    Args:
        affine: the 4×4 voxel-to-scanner (mm) matrix, or its linear part (3×3 for a 3D grid).

    Raises:
        ValueError: the matrix is not square, or larger than 4×4.
    """
    matrix = np.asarray(affine, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] > 4:
        raise ValueError(f"affine must be a 4×4 matrix (or its 3×3 linear part), got shape {matrix.shape}")
    linear = matrix[:3, :3] if matrix.shape[0] == 4 else matrix
    return float(abs(np.linalg.det(linear)) / 1000.0)


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


def mask_labels(
    data: np.ndarray, name: str, *, model_classes: int | None = None, dtype: npt.DTypeLike = np.int64
) -> np.ndarray:
    """The labels of a mask that `load_volume` read as float32, as whole numbers of `dtype`.

    Args:
        data: the mask's voxels.
        name: how messages call the mask (its file name, "the reference mask").
        model_classes: the class count of the model whose mask this must be (labels 0 .. model_classes - 1);
            None for any labels 0, 1, 2, ...

    Raises:
        LabelMaskError: non-integer values (an image or probabilities, not a mask), negative ones, or labels the
            model does not have.
    """
    problem = label_problem(data, model_classes)
    if problem is not None:
        expected = _EXPECTED if model_classes is None else (
            f"expected the model's classes as whole numbers 0 .. {model_classes - 1}"
        )  # fmt: skip
        raise LabelMaskError(f"{name} {problem}: {expected}")
    return np.rint(data).astype(dtype)


def looks_like_an_image(labels: np.ndarray) -> bool:
    """Many distinct values, and most neighbouring voxels differ: intensities, not regions of a few labels.

    How `label_masks` tells an image sent as a mask from a mask.
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


@dataclass(frozen=True)
class LabelMasks:
    """Label masks read for measuring or scoring, with the classes they are measured in.

    Attributes:
        labels: each mask's labels (int64), in the order given.
        num_classes: classes including background, at least 2.
        names: the class names (a model card's), or None for class_0, class_1, ...
    """

    labels: list[np.ndarray]
    num_classes: int
    names: list[str] | None


def label_masks(
    masks: Sequence[tuple[str, np.ndarray]],
    *,
    option: str,
    num_classes: int | None = None,
    names: Sequence[str] | None = None,
    model: str | None = None,
) -> LabelMasks:
    """Read label masks and the classes they hold: the rules of `unet3d stats`/`evaluate` and `POST /v1/stats`.

    Each mask must hold whole numbers ≥ 0; one that looks like an image is refused unless `num_classes` vouches
    for it. The class count is `num_classes` (which must exceed every label), else the count of `names` when the
    labels fit them, else the highest label + 1; at least 2. `names` name the classes when the count is theirs.

    Args:
        masks: (name for messages, voxels as `load_volume` reads them) of each mask.
        option: what the front end calls `num_classes` in messages ("--num-classes", "num_classes").
        num_classes: the class count the caller gave, if any.
        names: one name per class of a model card.
        model: how the caller named the model `names` come from: the masks must then be that model's (its class
            count, every label below it); without `model` the names are used only when they fit.

    Raises:
        LabelMaskError: a mask is not a label mask, or its labels do not fit the classes asked for.
    """
    labels = [_labels(data, name, option=None if num_classes is not None else option) for name, data in masks]
    highest, where = max((int(values.max(initial=0)), name) for values, (name, _) in zip(labels, masks, strict=True))
    if model is not None and names is not None:
        if num_classes not in (None, len(names)):
            raise LabelMaskError(f"{option} {num_classes} contradicts the {len(names)} classes of model '{model}'")
        if highest >= len(names):
            raise LabelMaskError(
                f"{where} holds labels up to {highest}, but model '{model}' has {len(names)} classes: "
                "is it that model's mask?"
            )
    if num_classes is not None and num_classes <= highest:
        raise LabelMaskError(
            f"{where} holds labels up to {highest}: {option} must be at least {highest + 1}, got {num_classes}"
        )
    if num_classes is not None:
        count = num_classes
    elif names is not None and highest < len(names):
        count = len(names)
    else:
        count = highest + 1
    count = max(count, 2)
    return LabelMasks(labels, count, list(names) if names is not None and count == len(names) else None)


def _labels(data: np.ndarray, name: str, *, option: str | None) -> np.ndarray:
    """A mask's labels; with an `option` to vouch for it, refuses one that looks like an image."""
    return image_free_labels(data, name, option=option) if option is not None else mask_labels(data, name)


def image_free_labels(data: np.ndarray, name: str, *, option: str | None = None) -> np.ndarray:
    """`mask_labels`, refusing a mask that looks like an image (`looks_like_an_image`).

    Args:
        option: the front end's way to vouch for such a mask (e.g. "--num-classes"), named in the message.

    Raises:
        LabelMaskError: not a label mask.
    """
    labels = mask_labels(data, name)
    if looks_like_an_image(labels):
        vouch = f" (if it is one, e.g. many small labelled objects, pass {option})" if option else ""
        raise LabelMaskError(
            f"{name} looks like an image, not a label mask: {np.unique(labels).size} distinct values and "
            f"neighbouring voxels mostly differ; {_EXPECTED}{vouch}"
        )
    return labels


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
    voxel_ml = voxel_volume_ml(affine)
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
