"""A real full-head scan with FreeSurfer surfaces but no brain mask: where does the model label brain tissue?

pycortex (PyPI) ships one such head, its demo subject S1: a whole 256 mm head (`anatomicals/raw.nii.gz`, skull,
face, tongue and neck down to the third vertebra) and FreeSurfer's pial and white-matter surfaces of both hemispheres
(`surfaces/pia_lh.gii`, `surfaces/wm_lh.gii`, ...), in the scan's world coordinates. The surfaces close over the
cerebrum only, so instead of a brain mask three figures that need none:

- `below_foramen_magnum_ml`: grey + white matter labelled below the foramen magnum (an axial plane at a given world z,
  read off the scan: the cerebellar tonsils end above it), where no brain is: the spinal cord, the tongue, the jaw and
  the neck's muscles. Goal: ≤ 1 % of the labelled tissue, as for a brain mask.
- `cerebrum_agreement_dice`: per class, inside the cerebrum (the pial surfaces), Dice between the result on the whole
  head and on the same scan stripped to the cerebrum (its pial surfaces grown by 1 mm): as the generated heads'
  agreement, it falls where the brain stage cuts cortex or lets the skull in. Goal: ≥ 0.95.
- `freesurfer_dice`: per class, Dice of each result (whole head, stripped) against FreeSurfer's reading of the same
  scan, where its surfaces decide the tissue: grey matter between the pial and the white surface, white matter inside
  the white surface within WHITE_SHELL_MM of it (deeper in, the white surface also encloses the ventricles and the deep
  grey nuclei). Not a manual truth, and no goal: it tells which of the two results a disagreement is to blame on.

And, for reading the rest: the tissue labelled outside the cerebrum above the foramen magnum (the cerebellum and the
brainstem, 130–180 mL in an adult, the cortex's labels that reach past the pial surface, and whatever else was
labelled there).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.gifti import GiftiImage
from scipy import ndimage

from unet3d import Segmenter, load_volume
from unet3d.metrics import dice

from .data import DatasetError
from .export import read_card, write_card
from .provenance import sha256_of

HEMISPHERES = ("lh", "rh")
SURFACES = ("pia", "wm")  # pycortex's names: pial and white-matter surfaces
WHITE_SHELL_MM = 3.0
# How far (voxels) the rays that test a voxel centre run beside it: no surface vertex or edge lies exactly on one.
RAY_OFFSET = np.array([1.2345e-4, 2.3456e-4])


def measure_surface_head(segmenter: Segmenter, subject: Path, foramen_magnum_z: float) -> dict[str, Any]:
    """The figures above for one pycortex-style subject folder (anatomicals/raw.nii.gz, surfaces/{pia,wm}_*.gii)."""
    scan = subject / "anatomicals" / "raw.nii.gz"
    surfaces = {kind: [subject / "surfaces" / f"{kind}_{h}.gii" for h in HEMISPHERES] for kind in SURFACES}
    files = [scan, *surfaces["pia"], *surfaces["wm"]]
    for path in files:
        if not path.is_file():
            raise DatasetError(f"{path} is missing: --subject takes a pycortex subject folder, e.g. filestore/db/S1")
    volume = load_volume(scan)
    full = segmenter.predict(volume).mask
    cerebrum, white = (_inside(surfaces[kind], volume.shape, volume.affine) for kind in SURFACES)
    kept = ndimage.binary_dilation(cerebrum)
    stripped = segmenter.predict(replace(volume, data=np.where(kept, volume.data, 0).astype(np.float32))).mask
    below = _world_z(volume.shape, volume.affine) < foramen_magnum_z
    names = segmenter.card.class_names()
    reference = freesurfer_reference(cerebrum, white, volume.spacing_mm)
    return {
        "scan": str(scan),
        "files": {str(p): sha256_of(p) for p in files},
        "foramen_magnum_z_mm": foramen_magnum_z,
        **surface_figures(full, stripped, cerebrum, below, names, volume.voxel_volume_ml),
        "freesurfer_dice": {
            result: freesurfer_dice(mask, reference, names) for result, mask in (("head", full), ("stripped", stripped))
        },
    }


def record_surface_head(model: Path, subject: str, figures: dict[str, Any], command: str) -> None:
    """Store a subject's figures in the model directory's card (model.yaml and the README made from it), under
    metrics.surface_heads.<subject>, with the date and the command."""
    card = read_card(model)
    kept = {key: value for key, value in figures.items() if key not in ("model", "scan")}
    heads = card.setdefault("metrics", {}).setdefault("surface_heads", {})
    heads[subject] = {**kept, "date": dt.date.today().isoformat(), "command": command}
    write_card(card, model)


def surface_figures(
    full: np.ndarray,
    stripped: np.ndarray,
    cerebrum: np.ndarray,
    below: np.ndarray,
    names: list[str],
    voxel_ml: float,
) -> dict[str, Any]:
    """The figures from the two results (whole head, stripped to the cerebrum), the cerebrum and the voxels below the
    foramen magnum (bool, broadcastable)."""
    tissue = full > 0
    labelled = int(tissue.sum())
    under = int((tissue & below).sum())
    return {
        "labelled_ml": round(labelled * voxel_ml, 1),
        "below_foramen_magnum_ml": round(under * voxel_ml, 1),
        "below_foramen_magnum_fraction": round(under / labelled, 5) if labelled else None,
        "cerebrum_ml": round(float(cerebrum.sum()) * voxel_ml, 1),
        "cerebrum_agreement_dice": {
            name: round(float(dice(full[cerebrum], stripped[cerebrum], i)), 4) for i, name in enumerate(names) if i
        },
        "outside_cerebrum_above_foramen_magnum_ml": round(float((tissue & ~cerebrum & ~below).sum()) * voxel_ml, 1),
        "volume_ml": {name: round(float((full == i).sum()) * voxel_ml, 1) for i, name in enumerate(names) if i},
    }


def freesurfer_reference(cerebrum: np.ndarray, white: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """FreeSurfer's tissue where its surfaces decide it (see the module docstring): 1 grey matter (inside the pial
    surface, outside the white one), 2 white matter (inside the white surface, within WHITE_SHELL_MM of it), 0 not
    judged."""
    depth = ndimage.distance_transform_edt(white, sampling=spacing)
    reference = np.zeros(cerebrum.shape, dtype=np.uint8)
    reference[cerebrum & ~white] = 1
    reference[white & (depth <= WHITE_SHELL_MM)] = 2
    return reference


def freesurfer_dice(mask: np.ndarray, reference: np.ndarray, names: list[str]) -> dict[str, float]:
    """Per tissue class, Dice of a result against `freesurfer_reference`, over the voxels that reference judges."""
    judged = reference > 0
    return {name: round(float(dice(mask[judged], reference[judged], i)), 4) for i, name in enumerate(names) if i}


def _inside(surfaces: list[Path], shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """The voxels inside any of the closed surfaces (the two hemispheres)."""
    inside = np.zeros(shape, dtype=bool)
    for surface in surfaces:
        inside |= inside_surface(surface, shape, affine)
    return inside


def inside_surface(path: Path, shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """The voxels of a grid whose centres lie inside a closed triangle surface (GIfTI, world mm), exactly: a ray up
    each column of the grid's third axis crosses the surface an odd number of times below a voxel inside it."""
    surface = nib.load(path)
    if not isinstance(surface, GiftiImage) or len(surface.darrays) < 2:
        raise DatasetError(f"{path} is not a GIfTI surface (its points, then its triangles)")
    points, triangles = surface.darrays[0].data.astype(np.float64), surface.darrays[1].data
    to_grid = np.linalg.inv(affine)
    corners = (points @ to_grid[:3, :3].T + to_grid[:3, 3])[triangles]  # (T, 3 corners, 3 axes), voxel units
    crossings = np.zeros((shape[0], shape[1], shape[2] + 1), dtype=np.int32)
    for column, height in _crossings(corners):
        inside_grid = (column[:, 0] >= 0) & (column[:, 0] < shape[0]) & (column[:, 1] >= 0) & (column[:, 1] < shape[1])
        first_above = np.clip(np.ceil(height), 0, shape[2]).astype(np.int64)
        np.add.at(crossings, (column[inside_grid, 0], column[inside_grid, 1], first_above[inside_grid]), 1)
    return (np.cumsum(crossings, axis=2)[:, :, : shape[2]] % 2) == 1


def _crossings(corners: np.ndarray) -> Any:
    """Where the rays up the grid's columns meet the triangles: batches of ((N, 2) column, (N,) height). The rays
    run a hair off the voxel centres (RAY_OFFSET) so that none passes exactly through an edge or a corner."""
    flat = corners[:, :, :2] - RAY_OFFSET
    low = np.ceil(flat.min(axis=1)).astype(np.int64)
    span = np.floor(flat.max(axis=1)).astype(np.int64) - low + 1
    a, b, c = flat[:, 0], flat[:, 1], flat[:, 2]
    area = _cross(b - a, c - a)
    for di in range(int(span[:, 0].max(initial=0))):
        for dj in range(int(span[:, 1].max(initial=0))):
            pick = (span[:, 0] > di) & (span[:, 1] > dj) & (area != 0)
            column = low[pick] + np.array([di, dj])
            q = column.astype(np.float64)
            pa, pb, pc, whole = a[pick], b[pick], c[pick], area[pick]
            wa, wb = _cross(pb - q, pc - q) / whole, _cross(pc - q, pa - q) / whole
            wc = 1.0 - wa - wb
            hit = (wa >= 0) & (wb >= 0) & (wc >= 0)
            z = corners[pick][:, :, 2]
            height = wa * z[:, 0] + wb * z[:, 1] + wc * z[:, 2]
            yield column[hit], height[hit]


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]


def _world_z(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """Every voxel's world z (mm), as a broadcastable array."""
    i, j, k = (np.arange(n, dtype=np.float32) for n in shape[:3])
    return (
        affine[2, 0] * i[:, None, None] + affine[2, 1] * j[None, :, None] + affine[2, 2] * k[None, None, :]
    ) + affine[2, 3]
