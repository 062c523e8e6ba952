"""The scans `python -m train calibrate-qc` measures: a dataset's validation scans as they are (what QC must pass) and
synthetic negatives made from them (what each check must catch). Never the test split.

Positives: the skull-stripped validation images with their labels, the full-head validation scans skull-stripped,
and the full heads themselves (which a skull-stripped-only model must be warned about, and every other check must
pass). Negatives, each built for one check: a CT (Hounsfield units rendered from a generated head's tissue map, on
the head canvas and cropped to the head), noise, a T2-like contrast inversion, headers flipped upside down and front
to back, a brain cut off at the top and at the front, a field of view twice as large, and voxel sizes declared 0.5×
and 1.5× too large.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from unet3d import Volume, load_volume, volume_from_array

from .consistency import dataset_heads
from .data import cases
from .fullhead import CANVAS_FILES, HEAD_SEEDS
from .head import PADDING, TISSUES, Brain, Canvas, generate_head
from .mni152 import tissue_labels

# CT numbers (HU) of the generated head's tissues; noise is added on top.
HOUNSFIELD = {"air": -1000, "grey_matter": 40, "white_matter": 28, "brain_csf": 8, "csf": 8, "dura": 50, "bone": 1200,
              "marrow": 350, "muscle": 50, "fat": -90, "skin": 40, "vitreous": 10, "eye_wall": 40, "air_cavity": -950,
              "soft_tissue": 40, "spinal_cord": 35}  # fmt: skip
NOISE_SEEDS = (3000, 3001)


@dataclass(frozen=True)
class QCCase:
    """One scan to measure: its name, its kind ("stripped", "full_head" or a negative's kind) and how to build it
    (a full head also has its brain mask, to tell whether the model labels tissue outside it)."""

    name: str
    kind: str
    build: Callable[[], Volume]
    brain: Path | None = None


def calibration_cases(root: Path) -> list[QCCase]:
    """Every positive and negative, the cheap ones first."""
    heads = dataset_heads(root, "validation")
    head_images = {case.head for case in heads}
    stripped = [case for case in cases(root, "validation") if case.image not in head_images]
    if not stripped:
        raise FileNotFoundError(f"{root}/dataset.json lists no skull-stripped validation scans to calibrate QC on")
    found = [QCCase(c.name, "stripped", _loader(c.image)) for c in stripped]
    found += [QCCase(f"{h.name}_stripped", "stripped", _loader(h.stripped_file())) for h in heads]
    found += [QCCase(h.name, "full_head", _loader(h.head), h.brain) for h in heads]
    for case in stripped:
        found += list(_negatives_of(case.name, case.image, case.label))
    found += [QCCase(f"noise_{seed}", "noise", _noise(seed)) for seed in NOISE_SEEDS]
    for seed in HEAD_SEEDS["validation"]:
        for tag, tight in (("", False), ("_crop", True)):
            found.append(QCCase(f"ct_{seed}{tag}", "ct", _ct(root, seed, tight)))
    return found


def _loader(path: Path) -> Callable[[], Volume]:
    return lambda: load_volume(path)


def _negatives_of(name: str, image: Path, label: Path) -> Iterator[QCCase]:
    def derived(kind: str, change: Callable[[Volume, np.ndarray], Volume], tag: str = "") -> QCCase:
        build = lambda: change(load_volume(image), load_volume(label).data > 0)  # noqa: E731
        return QCCase(f"{name}__{tag or kind}", kind, build)

    yield derived("flip_si", lambda v, _: _reheader(v, np.diag([1.0, 1.0, -1.0, 1.0]) @ v.affine))
    yield derived("flip_ap", lambda v, _: _reheader(v, np.diag([1.0, -1.0, 1.0, 1.0]) @ v.affine))
    yield derived("spacing_x0.5", lambda v, _: _rescaled(v, 0.5))
    yield derived("t2_like", _inverted)
    yield derived("cut", lambda v, brain: _cut(v, brain, "S", 0.3), "cut_superior")
    yield derived("cut", lambda v, brain: _cut(v, brain, "A", 0.25), "cut_anterior")
    yield derived("large_fov", lambda v, _: _padded(v))
    yield derived("spacing_x1.5", lambda v, _: _rescaled(v, 1.5))


def _reheader(volume: Volume, affine: np.ndarray, data: np.ndarray | None = None) -> Volume:
    return volume_from_array(volume.data if data is None else data, affine, name=volume.name)


def _rescaled(volume: Volume, factor: float) -> Volume:
    """The same voxels with a voxel size `factor` times the true one declared in the header."""
    affine = volume.affine.copy()
    affine[:3, :3] *= factor
    return _reheader(volume, affine)


def _inverted(volume: Volume, brain: np.ndarray) -> Volume:
    """T2-like: intensities inverted inside the brain (fluid bright, white matter dark), zero outside."""
    inside = ndimage.binary_fill_holes(ndimage.binary_dilation(brain, iterations=2))
    top = float(np.percentile(volume.data[inside], 99.5))
    return _reheader(volume, volume.affine, np.where(inside, top - np.clip(volume.data, 0, top), 0.0))


def _cut(volume: Volume, brain: np.ndarray, side: str, fraction: float) -> Volume:
    """The field of view moved in from `side` ("S" or "A") by `fraction` of the brain's extent."""
    ornt = nib.orientations.io_orientation(volume.affine)
    world = {"S": 2, "A": 1}[side]
    axis = int(np.flatnonzero(ornt[:, 0] == world)[0])
    present = np.flatnonzero(brain.any(axis=tuple(a for a in range(3) if a != axis)))
    cut = round(float(present[-1] - present[0]) * fraction)
    keep = [slice(None)] * 3
    keep[axis] = slice(0, present[-1] + 1 - cut) if ornt[axis, 1] > 0 else slice(present[0] + cut, None)
    start = np.array([s.start or 0 for s in keep], dtype=float)
    affine = volume.affine.copy()
    affine[:3, 3] += affine[:3, :3] @ start
    return _reheader(volume, affine, volume.data[tuple(keep)])


def _padded(volume: Volume) -> Volume:
    """The scan in the middle of a field of view twice as large along each axis (zeros around)."""
    shape = tuple(2 * n for n in volume.shape)
    offset = np.array([n // 2 for n in volume.shape])
    data = np.zeros(shape, dtype=np.float32)
    data[tuple(slice(o, o + n) for o, n in zip(offset, volume.shape, strict=True))] = volume.data
    affine = volume.affine.copy()
    affine[:3, 3] -= affine[:3, :3] @ offset
    return _reheader(volume, affine, data)


def _noise(seed: int) -> Callable[[], Volume]:
    return lambda: noise_volume(seed)


def noise_volume(seed: int) -> Volume:
    """Noise the size of a head scan: Gaussian magnitudes at 1 mm for an even seed, uniform at 1.2 mm for an odd one."""
    rng = np.random.default_rng(seed)
    if seed % 2:
        return volume_from_array(rng.uniform(0, 1000, (160, 160, 160)), np.diag([1.2, 1.2, 1.2, 1.0]), name="noise")
    return volume_from_array(np.abs(rng.normal(100, 30, (180, 210, 180))), name="noise")


def _ct(root: Path, seed: int, tight: bool) -> Callable[[], Volume]:
    return lambda: ct_volume(_canvas_brain(root), seed, tight=tight)


def ct_volume(brain: Brain, seed: int, *, tight: bool = False) -> Volume:
    """A CT-like head: the tissue map of the head `generate_head` makes around `brain` for `seed`, in Hounsfield
    units with noise; `tight`: cropped to the head's bounding box (little air around it)."""
    tissues = generate_head(brain, seed)
    lookup = np.array([HOUNSFIELD[name] for name in TISSUES], dtype=np.float32)
    data = lookup[tissues] + np.random.default_rng(seed).normal(0, 8, tissues.shape).astype(np.float32)
    affine = brain.canvas.affine.copy()
    if tight:
        box = ndimage.find_objects((tissues > 0).astype(np.uint8))[0]
        data = data[box]
        affine[:3, 3] += affine[:3, :3] @ np.array([s.start for s in box], dtype=float)
    return volume_from_array(data, affine, name=f"ct_{seed}.nii.gz")


@functools.lru_cache(maxsize=1)
def _canvas_brain(root: Path) -> Brain:
    """The template brain on the head canvas, from the dataset's canvas files (no nilearn needed)."""
    volumes = {key: load_volume(root / name) for key, name in CANVAS_FILES.items()}
    arrays = {key: volume.data for key, volume in volumes.items()}
    canvas = Canvas(volumes["t1"].shape, volumes["t1"].affine, tuple(before for before, _ in PADDING))  # type: ignore[arg-type]
    labels = tissue_labels(arrays["grey"] / 255.0, arrays["white"] / 255.0)
    return Brain.from_template(canvas, arrays["t1"], labels)
