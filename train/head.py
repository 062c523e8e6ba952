"""Procedural full heads around the MNI152 brain: the tissues outside the brain as a seeded tissue map.

The template is skull-stripped, so everything outside its brain mask is made here, SynthStrip-style: layers that
follow the distance from the brain (CSF, dura, inner table, diploë, outer table) and from the head's surface (skin,
subcutaneous fat, scalp muscle with a thicker temporalis), eyes in their orbital fat, a face, a jaw and a neck of
random blobs (muscle, fat, soft tissue, bone with marrow, air cavities), the large muscles a scanner's field of view
takes in below the brain (the tongue, the neck's posterior muscles), an airway and a spinal canal below the brainstem.
Every thickness is modulated by smooth random fields; one seed fixes one head. Anatomy is plausible, not exact: the
network is meant to learn that nothing outside the brain is grey or white matter, whatever it looks like.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from torch.nn import functional

TISSUES = (
    "air",
    "grey_matter",
    "white_matter",
    "brain_csf",
    "csf",
    "dura",
    "bone",
    "marrow",
    "muscle",
    "fat",
    "skin",
    "vitreous",
    "eye_wall",
    "air_cavity",
    "soft_tissue",
    "spinal_cord",
)
AIR, GM, WM, BRAIN_CSF, CSF, DURA, BONE, MARROW, MUSCLE, FAT, SKIN, VITREOUS, EYE_WALL, CAVITY, SOFT, CORD = range(16)
BRAIN = (GM, WM, BRAIN_CSF)
# Voxels added (before, after) on each axis of the template's RAS 1 mm grid: room for scalp, face (anterior) and neck
# (64 mm below the template's lowest slice: a sagittal 256 mm field of view reaches the chin and the third vertebra).
PADDING = ((8, 8), (8, 24), (64, 0))
# How far from the brain the CSF a brain-with-CSF mask keeps may lie: beyond the thickest generated layer (3.5 mm),
# short of the spinal canal's CSF below the brainstem.
CSF_REACH_MM = 4.5


def training_labels(tissues: np.ndarray) -> np.ndarray:
    """The model's classes of a tissue map: 1 grey matter, 2 white matter, 0 everything else (uint8)."""
    lookup = np.zeros(len(TISSUES), dtype=np.uint8)
    lookup[GM], lookup[WM] = 1, 2
    return lookup[tissues]


def brain_with_csf(tissues: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """The brain with the CSF around it, as BET's and ROBEX's masks draw it (bool, the tissue map's grid): every
    brain tissue, and the CSF within CSF_REACH_MM of the brain (`distance`: each voxel's mm from the brain mask)."""
    return np.isin(tissues, BRAIN) | ((tissues == CSF) & (distance <= CSF_REACH_MM))


@dataclass(frozen=True)
class Canvas:
    """The head's voxel grid: the template grid grown by PADDING (1 mm, RAS)."""

    shape: tuple[int, int, int]
    affine: np.ndarray
    offset: tuple[int, int, int]  # index of the template's voxel (0, 0, 0) in the canvas

    @classmethod
    def around(cls, shape: tuple[int, ...], affine: np.ndarray) -> Canvas:
        if not np.allclose(affine[:3, :3], np.eye(3), atol=1e-4):
            raise ValueError(f"the head generator needs a RAS 1 mm template grid, got affine {affine[:3, :3].tolist()}")
        offset = tuple(before for before, _ in PADDING)
        size = tuple(int(n) + before + after for n, (before, after) in zip(shape[:3], PADDING, strict=True))
        canvas_affine = affine.copy()
        canvas_affine[:3, 3] = affine[:3, 3] - np.array(offset)
        return cls(size, canvas_affine, offset)  # type: ignore[arg-type]

    def place(self, array: np.ndarray) -> np.ndarray:
        """A template-grid array on the canvas (zeros around it)."""
        out = np.zeros(self.shape, dtype=array.dtype)
        out[tuple(slice(o, o + n) for o, n in zip(self.offset, array.shape, strict=True))] = array
        return out

    def template_box(self, template_shape: tuple[int, ...]) -> tuple[slice, slice, slice]:
        """Where the template grid lies inside the canvas."""
        return tuple(slice(o, o + n) for o, n in zip(self.offset, template_shape[:3], strict=True))  # type: ignore[return-value]

    def axes_mm(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World coordinates (mm) along each axis, shaped to broadcast: (I,1,1), (1,J,1), (1,1,K)."""
        axes = [self.affine[a, 3] + np.arange(n, dtype=np.float32) for a, n in enumerate(self.shape)]
        return axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]


@dataclass(frozen=True)
class Brain:
    """The template brain on the canvas: its tissue map and the distance (mm) of every voxel from it."""

    canvas: Canvas
    tissues: np.ndarray  # uint8: GM, WM, BRAIN_CSF inside the brain mask, AIR outside
    distance: np.ndarray  # float32 mm from the brain mask (0 inside)

    @classmethod
    def from_template(cls, canvas: Canvas, t1: np.ndarray, labels: np.ndarray) -> Brain:
        """`t1` (skull-stripped: zero outside the brain) and its 0/1/2 labels, both on the canvas."""
        mask = ndimage.binary_fill_holes(t1 > 0)
        tissues = np.where(mask, np.choose(labels, [BRAIN_CSF, GM, WM]), AIR).astype(np.uint8)
        distance = ndimage.distance_transform_edt(~mask).astype(np.float32)
        return cls(canvas, tissues, distance)

    @property
    def mask(self) -> np.ndarray:
        return self.tissues != AIR


def generate_head(brain: Brain, seed: int) -> np.ndarray:
    """A full head's tissue map (uint8, canvas grid; indices into TISSUES) around `brain`, fixed by `seed`."""
    rng = np.random.default_rng([seed, 17])
    canvas = brain.canvas
    layers = _Layers.draw(canvas.shape, canvas.axes_mm(), rng)
    eyes = [_Eye.place(brain, side, rng) for side in (-1.0, 1.0)]
    silhouette = _silhouette(brain, layers, eyes, rng)
    surface = ndimage.distance_transform_edt(silhouette).astype(np.float32)
    tissues = np.where(silhouette, SOFT, AIR).astype(np.uint8)
    d = brain.distance
    cranial = d < layers.skull
    _fill_deep_tissue(tissues, silhouette & ~cranial, canvas, rng)
    _add_large_muscles(tissues, silhouette & ~cranial, brain, rng)
    _add_airway_and_spine(tissues, brain, rng)
    tissues[cranial & (d >= layers.inner_table)] = MARROW
    tissues[cranial & (d >= layers.skull - layers.outer)] = BONE
    scalp = silhouette & (d >= layers.inner_table)
    depth = layers.skin + layers.fat
    tissues[scalp & (surface < depth + layers.muscle)] = MUSCLE
    tissues[scalp & (surface < depth)] = FAT
    tissues[scalp & (surface < layers.skin)] = SKIN
    for eye in eyes:
        eye.draw(tissues, canvas, d >= layers.inner_table + 1.0)
    tissues[d < layers.inner_table] = BONE
    tissues[d < layers.dura] = DURA
    tissues[d < layers.csf] = CSF
    _add_cord(tissues, brain, rng)
    tissues[brain.mask] = brain.tissues[brain.mask]
    return tissues


def smooth_field(
    shape: tuple[int, ...], rng: np.random.Generator, *, coarse: int, low: float, high: float
) -> np.ndarray:
    """Values in [low, high] varying smoothly over `shape`: uniform draws on a coarse³ lattice, trilinear between."""
    knots = torch.from_numpy(rng.uniform(low, high, size=(1, 1, coarse, coarse, coarse)).astype(np.float32))
    return functional.interpolate(knots, size=tuple(shape), mode="trilinear", align_corners=True)[0, 0].numpy()


@dataclass(frozen=True)
class _Layers:
    """Cumulative distances (mm) from the brain of the inner layers, and the scalp's thicknesses from the surface."""

    csf: np.ndarray
    dura: np.ndarray
    inner_table: np.ndarray
    skull: np.ndarray  # outer edge of the outer table
    outer: np.ndarray  # outer table thickness
    muscle: np.ndarray
    fat: np.ndarray
    skin: np.ndarray

    @classmethod
    def draw(cls, shape: tuple[int, ...], axes: tuple[np.ndarray, ...], rng: np.random.Generator) -> _Layers:
        def field(low: float, high: float, coarse: int = 5) -> np.ndarray:
            # Each head also scales the whole layer (thin-skulled and thick-skulled heads), then varies it locally.
            scale = rng.uniform(0.8, 1.25)
            return smooth_field(shape, rng, coarse=coarse, low=low * scale, high=high * scale)

        x, y, z = axes
        # The temporalis: a thick muscle over the temporal squama, thin elsewhere.
        temporal = (
            (1 / (1 + np.exp(-(np.abs(x) - 48) / 4))) * np.exp(-(((z - 5) / 32) ** 2)) * np.exp(-(((y + 5) / 45) ** 2))
        ).astype(np.float32)
        csf = field(0.8, 3.5)
        dura = csf + field(0.5, 1.3)
        inner_table = dura + field(0.8, 2.2)
        outer = field(0.8, 2.2)
        skull = inner_table + field(1.0, 5.5) + outer
        muscle = field(0.3, 2.0) + temporal * rng.uniform(5.0, 12.0)
        return cls(csf, dura, inner_table, skull, outer, muscle, field(1.0, 6.5), field(0.8, 2.5))

    @property
    def head(self) -> np.ndarray:
        return self.skull + self.muscle + self.fat + self.skin


@dataclass(frozen=True)
class _Eye:
    centre: np.ndarray  # mm (x, y, z)
    radius: float

    @classmethod
    def place(cls, brain: Brain, side: float, rng: np.random.Generator) -> _Eye:
        """Below the frontal lobe, in front of the temporal pole; moved forward and down until clear of the brain."""
        radius = float(rng.uniform(10.5, 12.5))
        centre = np.array([side * rng.uniform(29, 35), rng.uniform(48, 60), rng.uniform(-44, -32)])
        step = np.array([0.0, 0.45, -0.9]) / np.hypot(0.45, 0.9)
        clearance = radius + rng.uniform(7.0, 10.0)
        for _ in range(60):
            if _distance_at(brain, centre) >= clearance:
                break
            centre = centre + step
        return cls(centre, radius)

    def draw(self, tissues: np.ndarray, canvas: Canvas, allowed: np.ndarray) -> None:
        r = self.radius
        box = self._box(canvas, r + 30)
        tissues, allowed = tissues[box], allowed[box]
        x, y, z = (axis[s] - c for axis, s, c in zip(canvas.axes_mm(), _broadcast(box), self.centre, strict=True))
        # Orbital fat: a cone-like ellipsoid behind the globe; the optic nerve runs back through it.
        fat = (x / (r + 3)) ** 2 + ((y + 9) / (r + 11)) ** 2 + ((z - 1) / (r + 2)) ** 2 < 1
        tissues[fat & allowed] = FAT
        nerve = (np.hypot(x - np.sign(self.centre[0]) * 0.3 * (y + r), z) < 2.2) & (y < 0) & (y > -r - 18)
        globe = np.sqrt(x**2 + y**2 + z**2)
        lens = ((x / 4.5) ** 2 + ((y - r + 2.5) / 2.2) ** 2 + (z / 4.5) ** 2) < 1
        tissues[nerve & allowed] = EYE_WALL
        tissues[(globe < r) & allowed] = EYE_WALL
        tissues[(globe < r - 1.0) & allowed] = VITREOUS
        tissues[lens & allowed] = EYE_WALL

    def ball(self, canvas: Canvas, grow: float) -> tuple[tuple[slice, ...], np.ndarray]:
        """A box of the canvas and, inside it, the globe grown by `grow` mm."""
        box = self._box(canvas, self.radius + grow + 1)
        x, y, z = (axis[s] - c for axis, s, c in zip(canvas.axes_mm(), _broadcast(box), self.centre, strict=True))
        return box, np.sqrt(x**2 + y**2 + z**2) < self.radius + grow

    def _box(self, canvas: Canvas, reach: float) -> tuple[slice, slice, slice]:
        centre = np.linalg.solve(canvas.affine, np.append(self.centre, 1.0))[:3]
        return tuple(
            slice(max(0, int(c - reach)), min(n, int(c + reach) + 1)) for c, n in zip(centre, canvas.shape, strict=True)
        )  # type: ignore[return-value]


def _broadcast(box: tuple[slice, ...]) -> tuple[tuple[slice | None, ...], ...]:
    """Index expressions that cut each broadcastable axis array of Canvas.axes_mm to `box`."""
    return (
        (box[0], slice(None), slice(None)),
        (slice(None), box[1], slice(None)),
        (slice(None), slice(None), box[2]),
    )


def _distance_at(brain: Brain, point_mm: np.ndarray) -> float:
    index = np.round(np.linalg.solve(brain.canvas.affine, np.append(point_mm, 1.0))[:3]).astype(int)
    index = np.clip(index, 0, np.array(brain.canvas.shape) - 1)
    return float(brain.distance[tuple(index)])


def _silhouette(brain: Brain, layers: _Layers, eyes: list[_Eye], rng: np.random.Generator) -> np.ndarray:
    """The head's inside: the cranium, a face and a neck (random ellipsoids), smoothed into one body."""
    canvas = brain.canvas
    x, y, z = canvas.axes_mm()
    face_y, face_z = rng.uniform(28, 42), rng.uniform(-48, -34)
    face = (x / rng.uniform(55, 66)) ** 2 + ((y - face_y) / rng.uniform(58, 72)) ** 2 + (
        (z - face_z) / rng.uniform(38, 50)
    ) ** 2 < 1
    nose = (x / rng.uniform(9, 13)) ** 2 + ((y - rng.uniform(92, 102)) / rng.uniform(12, 17)) ** 2 + (
        (z - rng.uniform(-34, -24)) / rng.uniform(16, 22)
    ) ** 2 < 1
    jaw = (x / rng.uniform(42, 52)) ** 2 + ((y - rng.uniform(30, 45)) / rng.uniform(38, 48)) ** 2 + (
        (z - rng.uniform(-100, -88)) / rng.uniform(22, 30)
    ) ** 2 < 1
    neck_y = rng.uniform(-22, -8)
    neck = ((x / rng.uniform(50, 62)) ** 2 + ((y - neck_y) / rng.uniform(50, 60)) ** 2 < 1) & (z < -40)
    body = (brain.distance < layers.head) | face | nose | jaw | neck
    for eye in eyes:
        box, ball = eye.ball(canvas, 5.0)
        body[box] |= ball
    smooth = ndimage.gaussian_filter(body.astype(np.float32), sigma=3.0) > 0.5
    return smooth | (brain.distance < layers.skull + 1.0)


def _fill_deep_tissue(tissues: np.ndarray, region: np.ndarray, canvas: Canvas, rng: np.random.Generator) -> None:
    """Blobs of muscle, soft tissue, fat, bone (marrow inside a cortical shell) and air cavities in face and neck."""
    if not region.any():
        return
    blobs = smooth_field(canvas.shape, rng, coarse=14, low=0.0, high=1.0)
    values = blobs[region]
    cuts = np.quantile(values, np.cumsum(rng.dirichlet([9, 4, 3, 2.5, 1.5]))[:-1])
    kind = np.searchsorted(cuts, values)
    x, y, z = canvas.axes_mm()
    # Air cavities (sinuses, nasal cavity) only in the upper face; elsewhere such blobs are muscle.
    sinus_zone = np.broadcast_to((y > 5) & (np.abs(x) < 30) & (z > -75) & (z < -5), canvas.shape)[region]
    kind[(kind == 4) & ~sinus_zone] = 0
    filled = np.array([MUSCLE, SOFT, FAT, MARROW, CAVITY], dtype=np.uint8)[kind]
    tissues[region] = filled
    bone = tissues == MARROW
    tissues[bone & ~ndimage.binary_erosion(bone, iterations=2)] = BONE


def _add_large_muscles(tissues: np.ndarray, region: np.ndarray, brain: Brain, rng: np.random.Generator) -> None:
    """The tongue and the neck's posterior muscles: masses of one tissue far larger than the blobs, which a T1 can
    show as bright as grey matter and which sit right below the brain."""
    x, y, z = brain.canvas.axes_mm()
    base_y, _ = _brainstem_tip(brain)
    tongue = (x / rng.uniform(18, 24)) ** 2 + ((y - rng.uniform(22, 34)) / rng.uniform(24, 32)) ** 2 + (
        (z - rng.uniform(-82, -70)) / rng.uniform(13, 19)
    ) ** 2 < 1
    tissues[tongue & region] = MUSCLE
    for side in (-1.0, 1.0):
        posterior = (
            ((x - side * rng.uniform(16, 24)) / rng.uniform(14, 20)) ** 2
            + ((y - base_y + rng.uniform(28, 40)) / rng.uniform(14, 20)) ** 2
            + ((z - rng.uniform(-115, -95)) / rng.uniform(30, 45)) ** 2
        ) < 1
        tissues[posterior & region] = MUSCLE


def _add_airway_and_spine(tissues: np.ndarray, brain: Brain, rng: np.random.Generator) -> None:
    """The pharynx (air) and the vertebral column (marrow in bone) below the brain, where the neck is."""
    x, y, z = brain.canvas.axes_mm()
    base_y, tip_z = _brainstem_tip(brain)
    inside = tissues != AIR
    below = z < tip_z + 8
    airway = (np.hypot(x / rng.uniform(0.8, 1.3), y - base_y - rng.uniform(38, 46)) < rng.uniform(5, 9)) & (z < -45)
    tissues[airway & inside] = CAVITY
    body_y = base_y + rng.uniform(17, 22)
    vertebra = (np.hypot(x / 1.3, y - body_y) < rng.uniform(9, 12)) & below
    tissues[vertebra & inside] = MARROW
    shell = vertebra & ~ndimage.binary_erosion(vertebra, iterations=2)
    tissues[shell & inside] = BONE


def _add_cord(tissues: np.ndarray, brain: Brain, rng: np.random.Generator) -> None:
    """The spinal cord continuing the brainstem down, in CSF, in a bony canal."""
    x, y, z = brain.canvas.axes_mm()
    base_y, tip_z = _brainstem_tip(brain)
    tilt = rng.uniform(-0.25, 0.05)
    axis = np.hypot(x, y - (base_y + tilt * (tip_z - z)))
    below = np.broadcast_to(z <= tip_z, tissues.shape)
    cord, csf = rng.uniform(4.0, 5.5), rng.uniform(1.5, 3.0)
    canal = axis < cord + csf + rng.uniform(2.0, 3.5)
    tissues[canal & below & ~np.isin(tissues, (AIR, CAVITY))] = BONE
    tissues[(axis < cord + csf) & below] = CSF
    tissues[(axis < cord) & below] = CORD


def _brainstem_tip(brain: Brain) -> tuple[float, float]:
    """(y, z) in mm of the brainstem's lowest slice (the template cuts it at the bottom of its grid)."""
    mask = brain.mask
    lowest = int(np.flatnonzero(mask.any(axis=(0, 1)))[0])
    _, y_index = np.nonzero(mask[:, :, lowest])
    _, y, z = brain.canvas.axes_mm()
    return float(y.ravel()[round(float(y_index.mean()))]), float(z.ravel()[lowest])
