"""The full-head part of the MNI152 dataset: generated heads for training, full-head validation and test volumes.

Written by `python -m train prepare-mni152` beside the skull-stripped copies:
- `heads/`: the template (T1, grey and white matter probabilities) on the head canvas, and one tissue map per
  training head (`train.head.generate_head`, seeds HEAD_SEEDS["training"]); the training sampler synthesises its
  images from these (train/synth.py).
- `fullheadVal/`, `fullheadTs/`: held-out heads (other seeds), rendered with T1 intensities, cut by a field of view and
  perturbed like the skull-stripped copies. Each case has the full head, the same image skull-stripped (the brain
  mask applied: what a skull-stripping tool gives), the brain mask and the labels, for the full-head consistency
  figures (train/consistency.py). The validation heads also join the "validation" list that selects the model.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from .config import SynthConfig
from .head import TISSUES, Brain, Canvas, brain_with_csf, generate_head
from .mni152 import Perturbation, build_case, cached_template, tissue_labels
from .synth import bank_from_arrays, synthesize

logger = logging.getLogger(__name__)

HEAD_SEEDS = {"training": range(20), "validation": range(1000, 1002), "test": range(2000, 2005)}
FULLHEAD_CASES = {
    "validation": (
        Perturbation("val_head_iso15_bias_noise", "iso1.5", bias=0.3, noise=0.03),
        Perturbation("val_head_anisoz_gamma", "aniso_z3", gamma=1.3, noise=0.02),
    ),
    "test": (
        Perturbation("test_head_ras_bias", "ras", bias=0.35, noise=0.02),
        Perturbation("test_head_lps_noise_gamma", "lps", noise=0.04, gamma=1.25),
        Perturbation("test_head_iso15_bias", "iso1.5", bias=0.3, noise=0.02),
        Perturbation("test_head_oblique_contrast", "oblique", contrast=0.8, noise=0.03),
        Perturbation("test_head_anisoz_noise", "aniso_z3", bias=0.2, noise=0.03),
    ),
}
FOLDERS = {"validation": "fullheadVal", "test": "fullheadTs"}
CANVAS_FILES = {
    "t1": "heads/canvas_t1.nii.gz",
    "grey": "heads/canvas_grey.nii.gz",
    "white": "heads/canvas_white.nii.gz",
}
SCANNER_SCALE = 600.0  # rendered intensities (white matter ≈ 1) in scanner-like units


def canvas_arrays(template: tuple[nib.Nifti1Image, ...]) -> tuple[Canvas, dict[str, np.ndarray]]:
    """The template's T1, grey and white matter maps (as stored: 0–255) and labels, placed on the head canvas."""
    t1 = template[0]
    canvas = Canvas.around(t1.shape, t1.affine)
    names = ("t1", "grey", "white")
    arrays = {name: canvas.place(np.asarray(image.dataobj)) for name, image in zip(names, template, strict=True)}
    arrays["labels"] = tissue_labels(arrays["grey"] / 255.0, arrays["white"] / 255.0)
    return canvas, arrays


def head_calls(
    out: Path, source: Path | None, *, test: bool = True
) -> list[tuple[Callable[..., Any], tuple[Any, ...]]]:
    """The jobs that write heads/ and the full-head folders (longest first); collect_heads turns their results
    into dataset.json entries. The canvas files are written here, at once."""
    canvas, arrays, _ = cached_brain(source)
    (out / "heads").mkdir(parents=True, exist_ok=True)
    for key, name in CANVAS_FILES.items():
        _save(arrays[key].astype(np.uint8), canvas.affine, out / name)
    splits = ["validation", "test"] if test else ["validation"]
    calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = [
        (write_fullhead_case, (out, split, seed, case, source))
        for split in splits
        for seed, case in zip(HEAD_SEEDS[split], FULLHEAD_CASES[split], strict=True)
    ]
    calls += [(write_head, (out, seed, source)) for seed in HEAD_SEEDS["training"]]
    return calls


def collect_heads(calls: list[tuple[Callable[..., Any], tuple[Any, ...]]], results: list[Any]) -> dict[str, Any]:
    """dataset.json's "heads" and "fullhead" entries from the finished head_calls."""
    training = [entry for (function, _), entry in zip(calls, results, strict=True) if function is write_head]
    fullhead: dict[str, list[dict[str, Any]]] = {}
    for (function, arguments), entry in zip(calls, results, strict=True):
        if function is write_fullhead_case:
            fullhead.setdefault(arguments[1], []).append(entry)
    heads = {"generator": "train.head.generate_head", "tissues": list(TISSUES), "canvas": CANVAS_FILES}
    return {"heads": {**heads, "training": training}, "fullhead": fullhead}


def write_head(out: Path, seed: int, source: Path | None) -> dict[str, Any]:
    """Generate and save one training head's tissue map (a job of head_calls)."""
    canvas, _, brain = cached_brain(source)
    name = f"heads/head_{seed:03d}.nii.gz"
    _save(generate_head(brain, seed), canvas.affine, out / name)
    logger.info("wrote %s", name)
    return {"tissues": name, "seed": seed}


def write_fullhead_case(out: Path, split: str, seed: int, case: Perturbation, source: Path | None) -> dict[str, Any]:
    """Render and save one held-out full head (a job of head_calls); returns its dataset.json entry."""
    _, arrays, brain = cached_brain(source)
    (out / FOLDERS[split]).mkdir(parents=True, exist_ok=True)
    entry: dict[str, Any] = {"name": case.name, "seed": seed, "recipe": case.recipe()}
    for kind, image in render_case(brain, arrays, seed, case).items():
        # The label file is named by the case alone: dataset cases are named after their label file.
        entry[kind] = f"{FOLDERS[split]}/{case.name}{'' if kind == 'label' else '_' + kind}.nii.gz"
        nib.save(image, out / entry[kind])
    logger.info("wrote %s (%s)", case.name, split)
    return entry


@functools.lru_cache(maxsize=1)
def cached_brain(source: Path | None) -> tuple[Canvas, dict[str, np.ndarray], Brain]:
    """The template on the head canvas and its Brain (a distance transform: seconds), once per process."""
    canvas, arrays = canvas_arrays(cached_template(source))
    return canvas, arrays, Brain.from_template(canvas, arrays["t1"], arrays["labels"])


def render_case(
    brain: Brain, arrays: dict[str, np.ndarray], seed: int, case: Perturbation
) -> dict[str, nib.Nifti1Image]:
    """One held-out full head: head (T1-like image), stripped (brain only), brain (mask), brain_csf (the brain with
    the CSF around it: `brain_with_csf`) and label, one grid."""
    tissues = generate_head(brain, seed)
    bank = bank_from_arrays(arrays, [tissues], torch.device("cpu"))
    generator = torch.Generator().manual_seed(seed)
    image = synthesize(bank, 0, "head", generator, SynthConfig()).numpy() * SCANNER_SCALE
    crop = _field_of_view(brain.canvas.shape, np.random.default_rng([seed, 5]))
    affine = brain.canvas.affine.copy()
    affine[:3, 3] += [s.start for s in crop]
    grey, white, mask = arrays["grey"][crop], arrays["white"][crop], brain.mask[crop].astype(np.float32)

    def perturbed(data: np.ndarray, recipe: Perturbation) -> nib.Nifti1Image:
        source = nib.Nifti1Image(data.astype(np.float32), affine)
        return build_case(recipe, seed, (source, *(nib.Nifti1Image(m, affine) for m in (grey, white))))[0]

    head, label = build_case(case, seed, tuple(nib.Nifti1Image(a, affine) for a in (image[crop], grey, white)))
    geometry_only = dataclasses.replace(case, bias=0.0, noise=0.0, gamma=1.0, contrast=1.0)
    brain_mask = (np.asanyarray(perturbed(mask, geometry_only).dataobj) > 0.5).astype(np.uint8)
    with_csf = brain_with_csf(tissues, brain.distance)[crop].astype(np.float32)
    brain_csf = (np.asanyarray(perturbed(with_csf, geometry_only).dataobj) > 0.5).astype(np.uint8)
    stripped = nib.Nifti1Image(np.asarray(head.dataobj) * brain_mask, head.affine, head.header)
    return {
        "head": head,
        "stripped": stripped,
        "brain": _like(brain_mask, head),
        "brain_csf": _like(brain_csf, head),
        "label": label,
    }


def _field_of_view(shape: tuple[int, ...], rng: np.random.Generator) -> tuple[slice, slice, slice]:
    """Where a scanner's field of view cuts the canvas: somewhere along the neck, now and then the nose."""
    inferior = int(rng.uniform(0, 48))
    anterior = int(rng.uniform(0, 14))
    return slice(0, shape[0]), slice(0, shape[1] - anterior), slice(inferior, shape[2])


def _save(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    image = nib.Nifti1Image(data, affine)
    image.set_data_dtype(data.dtype)
    image.header.set_xyzt_units("mm")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=2)
    nib.save(image, path)


def _like(data: np.ndarray, reference: nib.Nifti1Image) -> nib.Nifti1Image:
    image = nib.Nifti1Image(data, reference.affine, reference.header)
    image.set_data_dtype(data.dtype)
    return image
