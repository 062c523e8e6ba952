"""Label masks of cases: the checks an uploaded mask passes, its encoding on the volume's header, and its changes."""

from __future__ import annotations

import gzip
from collections.abc import Sequence

import numpy as np

from unet3d.errors import InvalidVolumeError, LabelMaskError
from unet3d.geometry import same_grid
from unet3d.io import Volume, mask_image
from unet3d.stats import image_free_labels, mask_labels

MAX_LABEL = 255  # masks are stored as uint8


def check_mask(mask: Volume, volume: Volume, *, num_classes: int | None = None) -> np.ndarray:
    """The labels of `mask` as uint8, once it is shown to be a label mask on `volume`'s voxel grid.

    Args:
        mask: the uploaded mask, as `load_volume` read it.
        volume: the case's volume.
        num_classes: the case's class count (labels must be below it); None for a new case (labels up to 255).

    Raises:
        InvalidVolumeError: another grid, non-integer or negative values, an image rather than a mask, or labels
            the case does not have.
    """
    if not same_grid(mask, volume):
        raise InvalidVolumeError(
            f"mask {mask.name} {mask.shape} is not on the voxel grid of the volume {volume.name} {volume.shape} "
            "(shape and affine): send a mask made on this volume"
        )
    if num_classes is None:  # a new case: any labels a uint8 holds, but not an image sent as a mask
        labels = image_free_labels(mask.data, mask.name)
        if labels.max(initial=0) > MAX_LABEL:
            raise LabelMaskError(f"{mask.name} holds labels up to {int(labels.max())}: masks hold labels 0 .. 255")
    else:
        labels = mask_labels(mask.data, mask.name, model_classes=num_classes)
    return labels.astype(np.uint8)


def class_names(highest_label: int, card_names: Sequence[str] | None) -> list[str]:
    """The model card's class names when the labels fit them, else class_0 .. class_<highest>."""
    if card_names and highest_label < len(card_names):
        return list(card_names)
    return [f"class_{index}" for index in range(max(highest_label + 1, 2))]


def class_voxels(labels: np.ndarray, num_classes: int) -> list[int]:
    """Voxels per class 0 .. num_classes - 1."""
    return [int(n) for n in np.bincount(labels.ravel(), minlength=num_classes)[:num_classes]]


def changed_voxels(parent: np.ndarray, child: np.ndarray) -> dict[str, dict[str, int]]:
    """Per class (index as a string) that changed: voxels that became it (`added`) and that left it (`removed`)."""
    moved = parent != child
    added = np.bincount(child[moved].ravel(), minlength=MAX_LABEL + 1)
    removed = np.bincount(parent[moved].ravel(), minlength=MAX_LABEL + 1)
    return {
        str(index): {"added": int(added[index]), "removed": int(removed[index])}
        for index in np.flatnonzero(added + removed)
    }


def encode_mask(labels: np.ndarray, volume: Volume) -> bytes:
    """The .nii.gz bytes of `labels` on `volume`'s exact header (what `unet3d.io.save_mask` writes).

    The gzip stream has no timestamp, so that one mask always has one sha256 and is stored once.
    """
    raw = mask_image(labels, volume).to_bytes()
    return gzip.compress(raw, compresslevel=6, mtime=0)
