"""Tiny synthetic datasets (noisy spheres with shells) for tests and smoke runs, in MSD layout."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np


def sphere_case(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An image with a bright core (label 2) inside a darker shell (label 1) on a dark background."""
    grid = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"), axis=-1).astype(np.float32)
    centre = rng.uniform(size * 0.4, size * 0.6, 3)
    radius = rng.uniform(size * 0.22, size * 0.32)
    distance = np.linalg.norm(grid - centre, axis=-1)
    label = np.zeros((size,) * 3, dtype=np.uint8)
    label[distance < radius] = 1
    label[distance < radius * 0.55] = 2
    image = np.choose(label, [0.1, 0.5, 0.9]).astype(np.float32)
    image += rng.normal(0, 0.05, image.shape).astype(np.float32)
    return image, label


def make_spheres_dataset(
    out: str | Path, *, train: int = 4, validation: int = 2, test: int = 2, size: int = 24, seed: int = 0
) -> Path:
    """Write an MSD-style dataset of `size`³ sphere volumes; returns its root."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    entries: dict[str, list[dict[str, str]]] = {}
    for split, count, folder in (("training", train, "Tr"), ("validation", validation, "Val"), ("test", test, "Ts")):
        (out / f"images{folder}").mkdir(parents=True, exist_ok=True)
        (out / f"labels{folder}").mkdir(parents=True, exist_ok=True)
        entries[split] = []
        for index in range(count):
            image, label = sphere_case(size, rng)
            name = f"sphere_{split}_{index:02d}"
            nib.save(nib.Nifti1Image(image, np.eye(4)), out / f"images{folder}" / f"{name}_0000.nii.gz")
            nib.save(nib.Nifti1Image(label, np.eye(4)), out / f"labels{folder}" / f"{name}.nii.gz")
            entries[split].append(
                {"image": f"images{folder}/{name}_0000.nii.gz", "label": f"labels{folder}/{name}.nii.gz"}
            )
    dataset = {
        "name": "spheres",
        "modality": {"0": "synthetic"},
        "labels": {"0": "background", "1": "shell", "2": "core"},
        "generator": {"seed": seed, "size": size},
        **entries,
    }
    (out / "dataset.json").write_text(json.dumps(dataset, indent=2), encoding="utf-8")
    return out
