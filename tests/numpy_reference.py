"""The previous host-side pipeline (NumPy + nibabel, before geometry and inference ran on the network's device), kept
as the oracle the device-resident pipeline is checked against: masks must agree on at least 99.9% of voxels."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import torch
from torch.nn import functional

from unet3d.card import ModelCard
from unet3d.io import Volume

_SAMPLE = 2_000_000
_RAS = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)


def normalize(volume: np.ndarray, clip: tuple[float, float] | None) -> np.ndarray:
    flat = volume.reshape(-1)
    if clip is None:
        low, high = float(volume.min()), float(volume.max())
    else:
        sample = flat[:: flat.size // _SAMPLE] if flat.size > _SAMPLE else flat
        low, high = np.percentile(sample, clip)
        if not high > low:
            low, high = float(volume.min()), float(volume.max())
    out = np.clip(volume, low, high).astype(np.float32, copy=False)
    out -= np.float32(low)
    out *= np.float32(1.0 / (high - low))
    return out


def crop_box(volume: np.ndarray, margin: int) -> tuple[slice, ...]:
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero((volume > 0).any(axis=other))
        if present.size == 0:
            return tuple(slice(0, n) for n in volume.shape)
        box.append(slice(max(0, int(present[0]) - margin), min(volume.shape[axis], int(present[-1]) + 1 + margin)))
    return tuple(box)


def resize(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    batch = tensor.reshape(1, -1, *tensor.shape[-3:])
    out = functional.interpolate(batch, size=shape, mode="trilinear", align_corners=False)
    return out.reshape(*array.shape[:-3], *shape).numpy()


def predict_mask(network: torch.nn.Module, volume: Volume, card: ModelCard, multiple: int) -> np.ndarray:
    """The previous `Segmenter.predict` mask for a whole fp32 pass: reorient, normalise, crop, resample, pad, argmax
    (from probabilities resized back when resampled), uncrop, back to the file's axis order."""
    orientation = nib.orientations.io_orientation(volume.affine)
    canonical = nib.orientations.apply_orientation(volume.data, orientation)
    normalized = normalize(canonical, card.input.clip_percentiles)
    box = crop_box(normalized, card.inference.crop_margin) if card.inference.crop_foreground else None
    array = normalized[box] if box else normalized
    cropped = array.shape
    spacing = [0.0] * 3
    for source, (target, _) in enumerate(orientation):
        spacing[int(target)] = volume.spacing_mm[source]
    target_mm = card.input.spacing_mm
    resampled = target_mm is not None and any(abs(s - t) > 0.05 * t for s, t in zip(spacing, target_mm, strict=True))
    if resampled:
        array = resize(
            array, tuple(max(1, round(n * s / t)) for n, s, t in zip(cropped, spacing, target_mm, strict=True))
        )
    pads = [((-n) % multiple // 2, (-n) % multiple - (-n) % multiple // 2) for n in array.shape]
    padded = np.pad(array, pads)
    with torch.inference_mode():
        logits = network(torch.from_numpy(np.ascontiguousarray(padded))[None, None])[0]
    inner = tuple(slice(a, logits.shape[1 + i] - b) for i, (a, b) in enumerate(pads))
    logits = logits[(slice(None), *inner)]
    if resampled:
        probabilities = resize(torch.softmax(logits, 0).numpy(), cropped)
        labels = probabilities.argmax(0).astype(np.uint8)
    else:
        labels = logits.argmax(0).to(torch.uint8).numpy()
    if box:
        full = np.zeros(canonical.shape, np.uint8)
        full[box] = labels
        labels = full
    inverse = nib.orientations.ornt_transform(_RAS, orientation)
    return np.ascontiguousarray(nib.orientations.apply_orientation(labels, inverse))
