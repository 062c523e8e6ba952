"""MSD / nnU-Net style datasets (imagesTr/, labelsTr/, dataset.json) read with the core's NIfTI I/O."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unet3d.io import Volume, canonical_orientation, canonical_spacing, load_volume, to_canonical
from unet3d.preprocessing import needs_resampling, resampled_shape, resize

from .augment import Subject


class DatasetError(ValueError):
    """The dataset folder is incomplete or an image/label pair does not match (the message names the file)."""


@dataclass(frozen=True)
class Case:
    image: Path
    label: Path
    name: str


def read_dataset(root: str | Path) -> dict[str, Any]:
    path = Path(root) / "dataset.json"
    if not path.exists():
        raise DatasetError(f"{path} not found: build it with `python -m train prepare-mni152 --out {root}`")
    return json.loads(path.read_text(encoding="utf-8"))


def cases(root: str | Path, split: str) -> list[Case]:
    """The (image, label) pairs of a split ("training", "validation" or "test") listed in dataset.json."""
    root = Path(root)
    found = []
    for entry in read_dataset(root).get(split, []):
        image, label = root / entry["image"], root / entry["label"]
        for file in (image, label):
            if not file.exists():
                raise DatasetError(f"{file} is listed in dataset.json but missing")
        found.append(Case(image, label, Path(entry["label"]).name.split(".")[0]))
    return found


def load_pair(case: Case) -> tuple[Volume, Volume]:
    """Load an image and its label, checking they share shape and affine."""
    image, label = load_volume(case.image), load_volume(case.label)
    if image.shape != label.shape:
        raise DatasetError(f"{case.label.name}: label shape {label.shape} differs from image shape {image.shape}")
    if not np.allclose(image.affine, label.affine, atol=1e-4):
        raise DatasetError(f"{case.label.name}: label affine differs from the affine of {case.image.name}")
    return image, label


def load_subject(case: Case, spacing_mm: tuple[float, float, float] | None, device: torch.device) -> Subject:
    """A training subject in canonical orientation, resampled to the model spacing if it differs."""
    image, label = load_pair(case)
    orientation = canonical_orientation(image)
    data = np.ascontiguousarray(to_canonical(image.data, orientation))
    labels = np.ascontiguousarray(to_canonical(label.data, orientation)).astype(np.float32)
    spacing = canonical_spacing(image, orientation)
    if spacing_mm is not None and needs_resampling(spacing, spacing_mm):
        shape = resampled_shape(data.shape, spacing, spacing_mm)  # type: ignore[arg-type]
        data = resize(data, shape)
        labels = torch.nn.functional.interpolate(torch.from_numpy(labels)[None, None], size=shape, mode="nearest")[
            0, 0
        ].numpy()
    image_t = torch.from_numpy(data).to(device)
    label_t = torch.from_numpy(labels).to(device)
    return Subject(image=image_t, label=label_t, foreground=torch.nonzero(label_t > 0))
