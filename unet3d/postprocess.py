"""From probabilities to a mask: labelling voxels, then the card's optional clean-up (largest component, holes)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from scipy import ndimage
from skimage import measure

from .options import DEFAULT_THRESHOLD


def labels_from_probabilities(probabilities: torch.Tensor, threshold: float | None) -> torch.Tensor:
    """`(C, ...)` probabilities → uint8 labels: argmax, or foreground ≥ threshold for binary models."""
    if probabilities.shape[0] == 1:
        return (probabilities[0] >= (DEFAULT_THRESHOLD if threshold is None else threshold)).to(torch.uint8)
    if probabilities.shape[0] == 2 and threshold is not None:
        return (probabilities[1] >= threshold).to(torch.uint8)
    return probabilities.argmax(dim=0).to(torch.uint8)


def labels_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """`(C, ...)` logits → uint8 labels without computing probabilities: argmax, or logit ≥ 0 (probability ≥ 0.5,
    the default threshold) for a single sigmoid output."""
    if logits.shape[0] == 1:
        return (logits[0] >= 0).to(torch.uint8)
    return logits.argmax(dim=0).to(torch.uint8)


def keep_largest_component(mask: np.ndarray, classes: Iterable[int]) -> np.ndarray:
    """Keep only the largest 26-connected component of each listed class; the rest becomes background.

    Args:
        mask: `(I, J, K)` uint8 labels; modified in place and returned.
        classes: class indices to clean (0 is never touched).
    """
    for cls in classes:
        if cls == 0:
            continue
        components = measure.label(mask == cls, connectivity=3)
        if components.max() <= 1:
            continue
        sizes = np.bincount(components.reshape(-1))
        sizes[0] = 0
        mask[(components != int(sizes.argmax())) & (components > 0)] = 0
    return mask


def fill_holes(mask: np.ndarray, classes: Iterable[int]) -> np.ndarray:
    """Fill background cavities fully enclosed by each listed class (in place)."""
    for cls in classes:
        if cls == 0:
            continue
        filled = ndimage.binary_fill_holes(mask == cls)
        mask[filled & (mask == 0)] = cls
    return mask


def postprocess(mask: np.ndarray, *, largest_component: Iterable[int] = (), holes: Iterable[int] = ()) -> np.ndarray:
    """Apply the card's clean-up steps in a fixed order: largest component, then hole filling."""
    keep_largest_component(mask, largest_component)
    fill_holes(mask, holes)
    return mask
