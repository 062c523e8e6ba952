"""Build the default dataset from nilearn's MNI ICBM152 2009a template, plus held-out perturbed copies.

Labels: 0 background/CSF, 1 grey matter, 2 white matter — per voxel the argmax of (1 − gm − wm, gm, wm)
over the probability maps (stored 0–255, scaled to 0–1). A resampled copy gets its labels by
resampling the probability maps the same way, then the argmax. Copyright of the template: McConnell
Brain Imaging Centre, free use with notice (see the dataset.json written next to the files).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.processing import resample_from_to
from scipy import ndimage

from .augment import rotation_matrix
from .parallel import run_jobs
from .provenance import sha256_of

logger = logging.getLogger(__name__)

FILES = {kind: f"mni_icbm152_{kind}_tal_nlin_sym_09a_converted.nii.gz" for kind in ("t1", "gm", "wm")}
LABELS = {"0": "background", "1": "grey_matter", "2": "white_matter"}
NOTICE = (
    "MNI ICBM152 non-linear symmetric 2009a template, Copyright (C) 1993-2009 Louis Collins, McConnell Brain "
    "Imaging Centre, Montreal Neurological Institute, McGill University. Free use with this notice."
)
ORIGIN_NOTE = "ORIGIN"  # in a --source folder: one line naming where its template files came from
VALIDATION_SEED = 1001
TEST_SEED = 2002


@dataclass(frozen=True)
class Perturbation:
    """One perturbed copy: a geometric change, then intensity changes, all seeded."""

    name: str
    geometry: str  # "ras" | "lps" | "permuted" | "iso1.5" | "aniso_z3" | "aniso_x3" | "oblique"
    bias: float = 0.0  # amplitude of the log bias field
    noise: float = 0.0  # Gaussian noise sigma, fraction of the 99th percentile intensity
    gamma: float = 1.0
    contrast: float = 1.0

    def recipe(self) -> dict[str, Any]:
        return {
            "geometry": self.geometry,
            "bias": self.bias,
            "noise": self.noise,
            "gamma": self.gamma,
            "contrast": self.contrast,
        }


TEST_CASES = (
    Perturbation("test_lps_bias", "lps", bias=0.35),
    Perturbation("test_permuted_noise", "permuted", noise=0.04),
    Perturbation("test_iso15_gamma", "iso1.5", gamma=1.4),
    Perturbation("test_anisoz_bias_noise", "aniso_z3", bias=0.3, noise=0.03),
    Perturbation("test_anisox_gamma_noise", "aniso_x3", gamma=0.75, noise=0.03),
    Perturbation("test_iso15_lps_contrast_bias", "iso1.5_lps", bias=0.25, contrast=0.7),
    Perturbation("test_oblique_noise_gamma", "oblique", noise=0.03, gamma=1.25),
    Perturbation("test_ras_strong_all", "ras", bias=0.45, noise=0.05, gamma=0.7),
)
VALIDATION_CASES = (
    Perturbation("val_permuted_bias", "permuted", bias=0.3),
    Perturbation("val_iso15_noise", "iso1.5", noise=0.04),
    Perturbation("val_anisoz_gamma", "aniso_z3", gamma=1.3),
    Perturbation("val_oblique_bias_noise", "oblique", bias=0.3, noise=0.03),
)


def template_dir() -> Path:
    """nilearn's packaged data folder holding the three template files."""
    import nilearn

    return Path(nilearn.__file__).parent / "datasets" / "data"


def template_source(source: Path | None = None) -> dict[str, Any]:
    """Where the template files came from: the package (and version) or folder, and each file's sha256."""
    folder = source or template_dir()
    if source is None:
        from importlib.metadata import version

        origin = f"nilearn {version('nilearn')} (PyPI), nilearn/datasets/data/"
    elif (source / ORIGIN_NOTE).is_file():  # a copy of the files (a GPU kit) says where they came from
        origin = (source / ORIGIN_NOTE).read_text(encoding="utf-8").strip()
    else:
        origin = str(source)
    return {"origin": origin, "sha256": {name: sha256_of(folder / name) for name in FILES.values()}}


def load_template(source: Path | None = None) -> tuple[nib.Nifti1Image, nib.Nifti1Image, nib.Nifti1Image]:
    folder = source or template_dir()
    t1, gm, wm = (nib.load(folder / FILES[kind]) for kind in ("t1", "gm", "wm"))
    return t1, gm, wm  # type: ignore[return-value]


def tissue_labels(gm: np.ndarray, wm: np.ndarray) -> np.ndarray:
    """argmax of (1 − gm − wm, gm, wm) with probabilities in [0, 1], as uint8."""
    background = 1.0 - gm - wm
    return np.argmax(np.stack([background, gm, wm]), axis=0).astype(np.uint8)


def _probability(image: nib.Nifti1Image) -> nib.Nifti1Image:
    data = np.asarray(image.dataobj, dtype=np.float32) / 255.0
    return nib.Nifti1Image(data, image.affine)


def _target_grid(
    reference: nib.Nifti1Image, geometry: str, rng: np.random.Generator
) -> tuple[tuple[int, ...], np.ndarray]:
    shape, affine = np.array(reference.shape[:3]), reference.affine
    if geometry.startswith("iso1.5") or geometry.startswith("aniso"):
        spacing = {"iso1.5": (1.5, 1.5, 1.5), "aniso_z3": (0.9, 0.9, 3.0), "aniso_x3": (3.0, 1.0, 1.0)}[
            geometry.removesuffix("_lps")
        ]
        new_shape = np.ceil(shape * np.abs(np.diag(affine)[:3]) / spacing).astype(int)
        new_affine = affine.copy()
        new_affine[:3, :3] = np.diag(spacing) * np.sign(np.diag(affine)[:3])
        return tuple(int(n) for n in new_shape), new_affine
    if geometry == "oblique":
        angles = np.deg2rad(rng.uniform(-12, 12, size=3))
        rotation = rotation_matrix(angles)
        centre = affine @ np.append((shape - 1) / 2.0, 1.0)
        new_affine = affine.copy()
        new_affine[:3, :3] = rotation @ affine[:3, :3]
        new_affine[:3, 3] = centre[:3] - new_affine[:3, :3] @ ((shape - 1) / 2.0)
        return tuple(int(n) for n in shape), new_affine
    return tuple(int(n) for n in shape), affine


def _reorient(image: nib.Nifti1Image, geometry: str) -> nib.Nifti1Image:
    if geometry.endswith("lps"):
        return image.as_reoriented(np.array([[0, -1], [1, -1], [2, 1]]))
    if geometry == "permuted":
        return image.as_reoriented(np.array([[2, 1], [0, -1], [1, 1]]))
    return image


def _bias_field(shape: tuple[int, ...], amplitude: float, rng: np.random.Generator) -> np.ndarray:
    coarse = rng.normal(size=(4, 4, 4))
    field = ndimage.zoom(coarse, [s / 4 for s in shape], order=3)[tuple(slice(0, s) for s in shape)]
    field = field / (np.abs(field).max() + 1e-8)
    return np.exp(amplitude * field).astype(np.float32)


def _perturb_intensity(data: np.ndarray, case: Perturbation, rng: np.random.Generator) -> np.ndarray:
    out = data.astype(np.float32)
    top = float(np.percentile(out, 99.5)) or 1.0
    if case.gamma != 1.0:
        out = top * np.clip(out / top, 0, None) ** case.gamma
    if case.contrast != 1.0:
        out = out * case.contrast + (1.0 - case.contrast) * top * 0.2
    if case.bias:
        out *= _bias_field(out.shape, case.bias, rng)
    if case.noise:
        # Rician magnitude noise, as in magnitude MR images.
        sigma = case.noise * top
        real = out + rng.normal(0, sigma, out.shape).astype(np.float32)
        imag = rng.normal(0, sigma, out.shape).astype(np.float32)
        out = np.sqrt(real**2 + imag**2)
    return out.astype(np.float32)


def build_case(
    case: Perturbation, seed: int, template: tuple[nib.Nifti1Image, ...]
) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """The perturbed T1 (int16 with scaling) and its labels (uint8), on the same new grid."""
    rng = np.random.default_rng([seed, sum(map(ord, case.name))])
    t1, gm, wm = template
    t1f = nib.Nifti1Image(np.asarray(t1.dataobj, dtype=np.float32), t1.affine)
    gmf, wmf = _probability(gm), _probability(wm)
    base = case.geometry.removesuffix("_lps") if case.geometry.startswith("iso") else case.geometry
    if base in ("ras", "lps", "permuted"):
        image, g, w = t1f, gmf, wmf
    else:
        grid = _target_grid(t1f, base, rng)
        image, g, w = (resample_from_to(x, grid, order=1) for x in (t1f, gmf, wmf))
    labels = tissue_labels(np.asarray(g.dataobj), np.asarray(w.dataobj))
    data = _perturb_intensity(np.asarray(image.dataobj), case, rng)
    out_image = nib.Nifti1Image(data, image.affine)
    out_image.set_data_dtype(np.int16)  # nibabel picks scl_slope so the float data fits int16
    out_labels = nib.Nifti1Image(labels, image.affine)
    out_labels.set_data_dtype(np.uint8)
    for img in (out_image, out_labels):
        img.header.set_xyzt_units("mm")
        img.set_qform(img.affine, code=1)
        img.set_sform(img.affine, code=2)
    geometry = case.geometry.split("_")[-1] if case.geometry.endswith("lps") else case.geometry
    return _reorient(out_image, geometry), _reorient(out_labels, geometry)


def prepare(
    out: Path,
    *,
    source: Path | None = None,
    only: Callable[[str], bool] | None = None,
    heads: bool = True,
    test: bool = True,
    jobs: int = 1,
) -> dict[str, Any]:
    """Write imagesTr/labelsTr (the template), imagesVal/labelsVal and imagesTs/labelsTs, and dataset.json; with
    `heads`, also the generated heads and the full-head validation and test cases (train/fullhead.py). Without
    `test`, no test cases (what training needs, e.g. on a GPU machine); `jobs` worker processes build the cases."""
    for folder in ("imagesTr", "labelsTr", "imagesVal", "labelsVal", *(("imagesTs", "labelsTs") if test else ())):
        (out / folder).mkdir(parents=True, exist_ok=True)
    entries: dict[str, list[dict[str, Any]]] = {"training": [_write_template(out, source)]}
    splits = [("validation", VALIDATION_CASES, VALIDATION_SEED, "Val"), ("test", TEST_CASES, TEST_SEED, "Ts")]
    chosen = [
        (out, split, folder, case, seed, source)
        for split, cases, seed, folder in splits[: 2 if test else 1]
        for case in cases
        if only is None or only(case.name)
    ]
    calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
    if heads:
        from .fullhead import collect_heads, head_calls

        calls = head_calls(out, source, test=test)  # the longest jobs first
    results = run_jobs(calls + [(write_case, job) for job in chosen], jobs)
    written = results[len(calls) :]
    for split, _, _, _ in splits:
        entries[split] = [entry for job, entry in zip(chosen, written, strict=True) if job[1] == split]
    extra: dict[str, Any] = {}
    if heads:
        extra = collect_heads(calls, results[: len(calls)])
        entries["validation"] += [
            {"image": case["head"], "label": case["label"], "recipe": case["recipe"], "seed": case["seed"]}
            for case in extra["fullhead"]["validation"]
        ]
    dataset = _dataset_json(source, entries, extra)
    (out / "dataset.json").write_text(json.dumps(dataset, indent=2), encoding="utf-8")
    return dataset


def _write_template(out: Path, source: Path | None) -> dict[str, Any]:
    """The template itself, the one training case: its T1 and tissue labels; returns its dataset.json entry."""
    t1, gm, wm = load_template(source)
    labels = tissue_labels(np.asarray(gm.dataobj) / 255.0, np.asarray(wm.dataobj) / 255.0)
    nib.save(t1, out / "imagesTr" / "mni152_0000.nii.gz")
    nib.save(nib.Nifti1Image(labels, t1.affine, t1.header), out / "labelsTr" / "mni152.nii.gz")
    return {"image": "imagesTr/mni152_0000.nii.gz", "label": "labelsTr/mni152.nii.gz"}


def _dataset_json(
    source: Path | None, entries: dict[str, list[dict[str, Any]]], extra: dict[str, Any]
) -> dict[str, Any]:
    return {
        "name": "MNI152-brain-tissue",
        "description": "Brain tissue (GM/WM) on the MNI ICBM152 2009a T1; held-out perturbed copies for evaluation",
        "reference": NOTICE,
        "licence": "free use with notice (see reference)",
        "modality": {"0": "T1"},
        "labels": LABELS,
        "numTraining": len(entries["training"]),
        "label_rule": "argmax(1 - gm - wm, gm, wm) of the probability maps, resampled with the image (order 1)",
        "generator": {
            "validation_seed": VALIDATION_SEED,
            "test_seed": TEST_SEED,
            "script": "python -m train prepare-mni152",
        },
        "sources": {"template": template_source(source)},
        **entries,
        **extra,
    }


def write_case(
    out: Path, split: str, folder: str, case: Perturbation, seed: int, source: Path | None
) -> dict[str, Any]:
    """Build and save one perturbed copy; returns its dataset.json entry (a job of `prepare`)."""
    image, label = build_case(case, seed, cached_template(source))
    nib.save(image, out / f"images{folder}" / f"{case.name}_0000.nii.gz")
    nib.save(label, out / f"labels{folder}" / f"{case.name}.nii.gz")
    logger.info("wrote %s (%s)", case.name, split)
    return {
        "image": f"images{folder}/{case.name}_0000.nii.gz",
        "label": f"labels{folder}/{case.name}.nii.gz",
        "recipe": case.recipe(),
        "seed": seed,
    }


@functools.lru_cache(maxsize=1)
def cached_template(source: Path | None) -> tuple[nib.Nifti1Image, nib.Nifti1Image, nib.Nifti1Image]:
    """The template, loaded once per process (prepare's worker processes each keep one)."""
    return load_template(source)
