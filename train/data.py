"""MSD / nnU-Net style datasets (imagesTr/, labelsTr/, dataset.json) read with the core's NIfTI I/O.

dataset.json lists its cases as `{"image": ..., "label": ...}` pairs under "training", "validation" and "test" (MSD).
An nnU-Net v2 dataset.json has no such lists: its training cases are found as `labelsTr/<case><file_ending>` with
`imagesTr/<case>_0000<file_ending>`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unet3d import Unet3dError
from unet3d.geometry import (
    canonical_orientation,
    canonical_spacing,
    needs_resampling,
    resampled_shape,
    resize,
    same_affine,
    to_canonical,
)
from unet3d.io import Volume, load_volume, stem_of
from unet3d.shapes import Spacing3, shape3
from unet3d.stats import label_problem

from .augment import Subject

logger = logging.getLogger(__name__)
SPLITS = ("training", "validation", "test")
LAYOUT = (
    'a dataset is a folder with imagesTr/, labelsTr/ and a dataset.json listing {"image": ..., "label": ...} pairs '
    'under "training", "validation" and "test" (MSD layout; an nnU-Net v2 dataset.json with "file_ending" works too)'
)


class DatasetError(ValueError):
    """The dataset folder is incomplete or an image/label pair does not match (the message names the file)."""


@dataclass(frozen=True)
class Case:
    image: Path
    label: Path
    name: str


# The files a full head lists in dataset.json ("fullhead" / split), by role (train/consistency.py `dataset_heads`).
FULL_HEAD_ROLES = ("head", "stripped", "brain", "label", "brain_csf")


def read_dataset(root: str | Path) -> dict[str, Any]:
    path = Path(root) / "dataset.json"
    if not path.exists():
        raise DatasetError(
            f"{path} not found: {LAYOUT}. `python -m train prepare-mni152 --out DIR` builds the shipped model's "
            "dataset, `python -m train prepare-spheres --out DIR` a tiny synthetic one"
        )
    try:
        dataset = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(dataset, dict):
        raise DatasetError(f"{path} must hold a JSON object: {LAYOUT}")
    return dataset


def cases(root: str | Path, split: str) -> list[Case]:
    """The labelled (image, label) pairs of a split listed in dataset.json; [] when it lists no such split."""
    root = Path(root)
    dataset = read_dataset(root)
    entries = dataset.get(split)
    named_by = "dataset.json lists it"
    if entries is None and split == "training" and "file_ending" in dataset:
        entries = _nnunet_training_entries(root, str(dataset["file_ending"]))
        named_by = "nnU-Net naming: labelsTr/<case><file_ending> goes with imagesTr/<case>_0000<file_ending>"
    if entries is None:
        return []
    where = f"{root / 'dataset.json'}: '{split}'"
    if not isinstance(entries, list):
        raise DatasetError(f"{where} must be a list: {LAYOUT}")
    found: dict[str, Case] = {}
    for position, entry in enumerate(entries):
        if isinstance(entry, str):
            raise DatasetError(
                f"{where} lists images without labels ({entry!r}; MSD leaves its test set unlabelled): training and "
                "evaluation need image/label pairs; evaluate a labelled split with --split"
            )
        if not isinstance(entry, dict) or not all(isinstance(entry.get(key), str) for key in ("image", "label")):
            raise DatasetError(
                f'{where}[{position}] must look like {{"image": "imagesTr/...", "label": "labelsTr/..."}}, '
                f"got {str(entry)[:200]}"
            )
        image, label = root / entry["image"], root / entry["label"]
        for file in (image, label):
            if not file.is_file():
                raise DatasetError(f"{file} is missing ({named_by})")
        name = stem_of(label.name)  # `sub.1.nii.gz` → `sub.1`: a case keeps its dots
        if name in found:
            raise DatasetError(f"{where}: two cases are named {name!r} ({found[name].label.name}, {label.name})")
        found[name] = Case(image, label, name)
    return list(found.values())


def labelled_splits(root: str | Path) -> dict[str, int]:
    """Case counts of the splits that hold image/label pairs (for messages)."""
    counts = {}
    for split in SPLITS:
        try:
            counts[split] = len(cases(root, split))
        except DatasetError:
            continue
    return {split: count for split, count in counts.items() if count}


def check_dataset(root: str | Path, class_names: list[str]) -> None:
    """Check dataset.json's own description against the config: one input channel, the card's number of classes.

    Raises:
        DatasetError: several channels, or a label count that differs from the card's classes.
    """
    path = Path(root) / "dataset.json"
    dataset = read_dataset(root)
    channels = dataset.get("channel_names", dataset.get("modality"))
    if isinstance(channels, dict) and len(channels) > 1:
        raise DatasetError(
            f"{path} declares {len(channels)} input channels ({', '.join(map(str, channels.values()))}): unet3d "
            "models take one; keep one channel's images in the dataset"
        )
    labels = _label_names(dataset.get("labels"))
    if labels is None:
        return
    if len(labels) != len(class_names):
        raise DatasetError(
            f"{path} declares {len(labels)} labels ({', '.join(labels)}) but the config's card.classes names "
            f"{len(class_names)} ({', '.join(class_names)}): list one class per label, in label order"
        )
    if [name.lower() for name in labels] != [name.lower() for name in class_names]:
        logger.warning("dataset.json names the labels %s, the config's card.classes %s", labels, class_names)


def load_pair(case: Case, num_classes: int | None = None) -> tuple[Volume, Volume]:
    """Load an image and its label, checking they share shape and affine (and, given `num_classes`, that the
    label holds whole numbers 0 .. num_classes - 1)."""
    image, label = _load(case.image), _load(case.label)
    if image.shape != label.shape:
        raise DatasetError(f"{case.label}: label shape {label.shape} differs from image shape {image.shape}")
    if not same_affine(image.affine, label.affine):
        difference = float(np.abs(image.affine - label.affine).max())
        raise DatasetError(
            f"{case.label}: its affine differs from the affine of {case.image.name} (by up to {difference:.4g}): "
            "resample the label onto the image's grid (nearest neighbour), or, if they are the same grid, copy the "
            "image's header into the label"
        )
    if num_classes is not None:
        _check_labels(case.label, label.data, num_classes)
    return image, label


def load_subject(case: Case, spacing_mm: Spacing3 | None, device: torch.device, num_classes: int) -> Subject:
    """A training subject in canonical orientation, resampled to the model spacing if it differs (the image
    trilinearly, the labels by nearest neighbour)."""
    image, label = load_pair(case, num_classes)
    orientation = canonical_orientation(image)
    image_t = torch.from_numpy(np.ascontiguousarray(to_canonical(image.data, orientation))).to(device)
    labels = np.ascontiguousarray(to_canonical(label.data, orientation)).astype(np.float32)
    label_t = torch.from_numpy(labels).to(device)
    spacing = canonical_spacing(image, orientation)
    if spacing_mm is not None and needs_resampling(spacing, spacing_mm):  # resampled on the training device
        shape = resampled_shape(shape3(image_t.shape), spacing, spacing_mm)
        image_t, label_t = resize(image_t, shape), resize(label_t, shape, mode="nearest")
    return Subject(image=image_t, label=label_t, foreground=torch.nonzero(label_t > 0))


def _load(path: Path) -> Volume:
    try:
        return load_volume(path)
    except Unet3dError as e:
        raise DatasetError(f"{path}: {e}") from e


def _check_labels(path: Path, data: np.ndarray, num_classes: int) -> None:
    problem = label_problem(data, num_classes)
    if problem is not None:
        raise DatasetError(
            f"{path}: the label mask {problem}; the model has {num_classes} classes (its card.classes, 0 .. "
            f"{num_classes - 1}): name one class per label value, and resample labels with nearest neighbour, "
            "never linearly"
        )


def _label_names(labels: Any) -> list[str] | None:
    """dataset.json's labels in index order: MSD writes {"0": "background"}, nnU-Net v2 {"background": 0}."""
    if not isinstance(labels, dict) or not labels:
        return None
    if all(str(key).isdigit() for key in labels):
        return [str(labels[key]) for key in sorted(labels, key=int)]
    if all(isinstance(value, int) for value in labels.values()):
        return sorted(labels, key=labels.__getitem__)
    return None  # nnU-Net region labels (lists of values): not a plain class list


def _nnunet_training_entries(root: Path, ending: str) -> list[dict[str, str]]:
    entries = []
    for label in sorted((root / "labelsTr").glob(f"*{ending}")):
        case = label.name[: -len(ending)]
        entries.append({"image": f"imagesTr/{case}_0000{ending}", "label": f"labelsTr/{label.name}"})
    return entries
