"""A review: one prediction's cached arrays, files, reference comparison and crosshair readout (kept per browser tab
in `state.Session`).

Everything here is plain numpy so it can be tested without a browser; the handlers in `events.py` only translate
between these objects and components, and `figures.py` turns a review into plots and tables.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from unet3d import ClassInfo, Prediction
from unet3d.errors import InvalidVolumeError
from unet3d.geometry import canonical_orientation, canonical_spacing, index_from_canonical, same_affine, to_canonical
from unet3d.io import Volume, load_volume, stem_of
from unet3d.metrics import evaluate
from unet3d.stats import mask_labels

from .rendering import Layers

PROBABILITIES_SUFFIX = "_probabilities.nii.gz"
SEG_SUFFIX = "_seg.dcm"


@dataclass(frozen=True)
class Review:
    """What the UI needs after one segmentation, so that no interaction ever re-runs the model.

    Attributes:
        layers: the canonical arrays drawn by `rendering`.
        classes: the card's classes (index, name, colour).
        summary: the prediction summary (the /v1/predict JSON fields).
        workdir: private folder holding this session's output files; removed by `close`.
        files: downloadable outputs (mask, summary JSON, optional probabilities, the DICOM SEG of a DICOM input).
        grid: the input's shape and affine, to check that a reference mask lies on the same grid.
        orientation: nibabel orientation array used to bring input-grid arrays to closest RAS.
        metrics: per-class agreement with the reference mask, once one is attached.
        source: the uploaded volume this review segmented (a reference uploaded for another volume waits for its own).
        case_id: the stored case this review shows (None when it was not stored).
        revision: the case's mask revision shown (0: the prediction).
    """

    layers: Layers
    classes: tuple[ClassInfo, ...]
    summary: dict[str, Any]
    workdir: Path
    files: tuple[Path, ...]
    grid: tuple[tuple[int, ...], np.ndarray]
    orientation: np.ndarray
    voxel_ml: float
    metrics: dict[str, Any] | None = field(default=None)
    source: Path | None = field(default=None)
    case_id: int | None = field(default=None)
    revision: int = field(default=0)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def close(self) -> None:
        """Delete the session's files (Gradio has already copied what it serves)."""
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_review(prediction: Prediction, workdir: Path, *, save_probabilities: bool = False) -> Review:
    """Write the outputs of `prediction` into `workdir` (created if needed) and cache what the views need."""
    workdir.mkdir(parents=True, exist_ok=True)
    stem = _safe_stem(prediction.volume.name)
    mask_path = prediction.save(workdir / f"{stem}_mask.nii.gz")
    files = [mask_path]
    if save_probabilities and prediction.probabilities is not None:
        files.append(prediction.save_probabilities(workdir / f"{stem}{PROBABILITIES_SUFFIX}"))
    summary = prediction.summary()
    summary_path = workdir / f"{stem}_summary.json"
    summary_path.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    files.insert(1, summary_path)
    if prediction.volume.source.format == "dicom":  # the mask as a DICOM SEG, to show beside the series in a viewer
        files.append(prediction.save_dicom_seg(workdir / f"{stem}{SEG_SUFFIX}"))
    volume = prediction.volume
    orientation = canonical_orientation(volume)
    entropy = None if prediction.probabilities is None else normalised_entropy(prediction.probabilities)
    layers = Layers(
        image=np.ascontiguousarray(to_canonical(volume.data, orientation)),
        mask=np.ascontiguousarray(to_canonical(prediction.mask, orientation)),
        spacing_mm=canonical_spacing(volume, orientation),
        colors=tuple(c.color for c in prediction.card.classes),
        entropy=None if entropy is None else np.ascontiguousarray(to_canonical(entropy, orientation)),
    )
    grid = (volume.shape, volume.affine.copy())
    return Review(
        layers, prediction.card.classes, summary, workdir, tuple(files), grid, orientation, volume.voxel_volume_ml
    )


def normalised_entropy(probabilities: np.ndarray) -> np.ndarray:
    """Voxel entropy of `(C, I, J, K)` class probabilities, divided by log(C): 0 = certain, 1 = uniform (float16)."""
    total = np.zeros(probabilities.shape[1:], dtype=np.float32)
    for channel in probabilities:
        p = np.clip(channel, 1e-7, 1.0)
        total -= p * np.log(p)
    total /= np.float32(np.log(max(probabilities.shape[0], 2)))
    return np.clip(total, 0.0, 1.0).astype(np.float16)


def attach_reference(review: Review, path: Path, *, max_voxels: int | None = None) -> Review:
    """Load a reference mask on the input's grid and compute per-class Dice/IoU (HD95 left out: it is slow).

    Raises:
        InvalidVolumeError: the mask is on another grid, holds non-integer values, or labels the model lacks.
    """
    reference = load_volume(path, max_voxels=max_voxels)
    _check_same_grid(reference, review)
    labels = mask_labels(reference.data, "the reference mask", model_classes=len(review.classes), dtype=np.uint8)
    canonical = np.ascontiguousarray(to_canonical(labels, review.orientation))
    metrics = evaluate(
        review.layers.mask,
        canonical,
        num_classes=len(review.classes),
        spacing_mm=review.layers.spacing_mm,
        affine=review.grid[1],
        class_names=review.class_names,
        with_hd95=False,
    )
    return replace(review, layers=replace(review.layers, reference=canonical), metrics=metrics)


@dataclass(frozen=True)
class CursorInfo:
    """What lies under the crosshair, in the user's own terms.

    Attributes:
        voxel: (i, j, k) index in the uploaded file's voxel order (what other tools show for this voxel).
        world_mm: scanner coordinates of that voxel's centre (the file's affine), in mm.
        intensity: the uploaded image's value there.
        predicted: name of the predicted class.
        reference: name of the reference class, once a reference mask is attached.
        uncertainty: normalised entropy in [0, 1], when the uncertainty map was computed.
    """

    voxel: tuple[int, int, int]
    world_mm: tuple[float, float, float]
    intensity: float
    predicted: str
    reference: str | None
    uncertainty: float | None


def cursor_info(review: Review, point: tuple[int, int, int]) -> CursorInfo:
    """The voxel at canonical `point` (x, y, z; clamped to the volume), described on the uploaded file's grid."""
    layers = review.layers
    x, y, z = (int(np.clip(v, 0, n - 1)) for v, n in zip(point, layers.shape, strict=True))
    shape, affine = review.grid
    voxel = index_from_canonical((x, y, z), review.orientation, shape)
    world = affine @ np.array([*voxel, 1.0])
    names = review.class_names
    return CursorInfo(
        voxel=voxel,
        world_mm=(float(world[0]), float(world[1]), float(world[2])),
        intensity=float(layers.image[x, y, z]),
        predicted=names[int(layers.mask[x, y, z])],
        reference=None if layers.reference is None else names[int(layers.reference[x, y, z])],
        uncertainty=None if layers.entropy is None else float(layers.entropy[x, y, z]),
    )


def _check_same_grid(reference: Volume, review: Review) -> None:
    shape, affine = review.grid
    if reference.shape != shape:
        raise InvalidVolumeError(
            f"reference mask has shape {reference.shape}, the volume has {shape}: "
            "upload a mask on the same voxel grid as the segmented volume"
        )
    if not same_affine(reference.affine, affine):
        raise InvalidVolumeError(
            "reference mask has the same shape but a different voxel-to-world affine: "
            "resample it onto the segmented volume's grid first"
        )


def default_window(image: np.ndarray) -> tuple[float, float]:
    """Intensity window from the 0.5th-99.5th percentiles of the non-zero voxels (subsampled: fast)."""
    sample = image.reshape(-1)[:: max(1, image.size // 500_000)]
    nonzero = sample[sample != 0]
    values = nonzero if nonzero.size > 100 else sample
    low, high = np.percentile(values, [0.5, 99.5])
    return float(low), float(high if high > low else low + 1.0)


def default_cursor(layers: Layers) -> tuple[int, int, int]:
    """Centre of mass of the foreground (or the volume's centre when the mask is empty)."""
    foreground = np.argwhere(layers.mask[::2, ::2, ::2] > 0) * 2
    if foreground.size == 0:
        return tuple(int(n // 2) for n in layers.shape)  # type: ignore[return-value]
    centre = foreground.mean(axis=0).round().astype(int)
    return int(centre[0]), int(centre[1]), int(centre[2])


def most_uncertain(layers: Layers) -> tuple[int, int, int] | None:
    """Per axis, the slice with the largest summed entropy (None without probabilities)."""
    if layers.entropy is None:
        return None
    entropy = layers.entropy.astype(np.float32)
    return tuple(int(np.argmax(entropy.sum(axis=tuple(a for a in range(3) if a != axis)))) for axis in range(3))  # type: ignore[return-value]


def _safe_stem(name: str) -> str:
    stem = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in stem_of(name))
    return stem.strip("._") or "volume"
