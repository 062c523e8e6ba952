"""Image synthesis from head tissue maps, on the training device: the three kinds of training sample.

- `head`: the real template T1 inside the brain, the generated tissues around it with T1-like intensities.
- `stripped`: the real skull-stripped template on its own grid, exactly as the plain sampler draws it.
- `synthetic`: every tissue a random intensity (any contrast), grey/white/CSF mixed by the template's probability
  maps for partial volume (SynthSeg).
`head` and `synthetic` samples are now and then skull-stripped by a mask that runs a random margin beyond (or inside)
the brain's edge, uneven along it, as real tools' masks are; their labels are those inside the mask (or, with
synth.strip_labels=mask, the mask itself). They are cut by a random field of view. Then the usual augmentation follows
(bias field, noise, normalisation, random affine + elastic patch, gamma, curve, contrast, blur, thick slices): see
augment.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch.nn import functional

from unet3d import Unet3dError
from unet3d.geometry import canonical_orientation, to_canonical
from unet3d.io import load_volume

from .augment import PatchSampler, Subject, _sample
from .config import AugmentConfig, SynthConfig, TrainConfig
from .config_checks import BRAIN_REFERENCES
from .data import Case, DatasetError, read_dataset
from .head import BRAIN, PADDING, TISSUES, brain_with_csf, training_labels

MODES = ("head", "stripped", "synthetic")
# T1 intensity of each tissue outside the brain as a fraction of white matter's (MPRAGE/SPGR-like ranges): the
# `head` mode draws each sample's values from these. Fat and marrow are bright, bone, air and vitreous dark.
T1_PRIORS: dict[str, tuple[float, float]] = {
    "air": (0.0, 0.02),
    "csf": (0.06, 0.35),
    "dura": (0.2, 0.55),
    "bone": (0.02, 0.15),
    "marrow": (0.45, 1.0),
    "muscle": (0.3, 0.6),
    "fat": (0.8, 1.35),
    "skin": (0.4, 0.85),
    "vitreous": (0.03, 0.25),
    "eye_wall": (0.25, 0.6),
    "air_cavity": (0.0, 0.06),
    "soft_tissue": (0.35, 0.75),
    "spinal_cord": (0.55, 0.9),
}


@dataclass
class HeadBank:
    """The template on the head canvas and the generated tissue maps, on the training device."""

    t1: torch.Tensor  # (I, J, K) float32, skull-stripped template, white matter's median = 1
    grey: torch.Tensor  # (I, J, K) float16 probability
    white: torch.Tensor  # (I, J, K) float16 probability
    labels: torch.Tensor  # (I, J, K) float32 classes 0/1/2 (the same for every head: one brain)
    heads: list[torch.Tensor]  # each (I, J, K) uint8 indices into TISSUES
    template_box: tuple[slice, slice, slice]  # the template's own grid inside the canvas
    foreground: torch.Tensor  # (N, 3) long, a strided subset of the voxels with labels > 0
    # Each head's own labels (I, J, K) float32, where they differ from head to head (synth.target=brain_csf: the CSF
    # layer is the head's); None: every head carries `labels`. The `stripped` samples always carry `labels`.
    head_labels: list[torch.Tensor] | None = None

    @property
    def brain(self) -> torch.Tensor:
        return self.t1 > 0


def synthesize(bank: HeadBank, head: int, mode: str, generator: torch.Generator, config: SynthConfig) -> torch.Tensor:
    """A raw full-canvas image of `head` in `mode` ("head" or "synthetic"), float32 on the bank's device: the whole
    head, never stripped (see `strip_mask`)."""
    tissues = bank.heads[head].long()
    device = bank.t1.device
    brain = bank.brain
    if mode == "head":
        means = torch.zeros(len(TISSUES))
        for name, (low, high) in T1_PRIORS.items():
            means[TISSUES.index(name)] = low + (high - low) * torch.rand((), generator=generator)
        image = torch.where(brain, bank.t1, means.to(device)[tissues])
        return image * _texture(tissues, brain, generator, config, inside_brain=False)
    means = torch.rand(len(TISSUES), generator=generator).to(device)
    grey, white = bank.grey.float(), bank.white.float()
    mixed = grey * means[TISSUES.index("grey_matter")] + white * means[TISSUES.index("white_matter")]
    mixed = mixed + (1 - grey - white).clamp_min(0) * means[TISSUES.index("brain_csf")]
    image = torch.where(brain, mixed, means[tissues])
    return image * _texture(tissues, brain, generator, config, inside_brain=True)


def signed_distance(brain: torch.Tensor, voxel_mm: float) -> torch.Tensor:
    """Each voxel's distance in mm from the brain's edge, float16: outside, to the nearest brain voxel; inside, one
    voxel less than to the nearest voxel outside, negated (the brain's outer layer is 0)."""
    inside = brain.cpu().numpy()
    outside = ndimage.distance_transform_edt(~inside)
    depth = ndimage.distance_transform_edt(inside)
    distance = np.where(inside, 1.0 - depth, outside) * voxel_mm
    return torch.from_numpy(distance.astype(np.float16)).to(brain.device)


def strip_mask(distance: torch.Tensor, margin_mm: Sequence[float], generator: torch.Generator) -> torch.Tensor:
    """A skull-stripping mask: the voxels within a margin of the brain's edge (`signed_distance`), the margin drawn
    from [low, high] mm and varying smoothly along the surface within that range."""
    low, high = margin_mm
    middle = low + (high - low) * float(torch.rand((), generator=generator))
    coarse = torch.randn((1, 1, 6, 6, 6), generator=generator).to(distance.device)
    field = functional.interpolate(coarse, size=tuple(distance.shape), mode="trilinear", align_corners=True)[0, 0]
    margin = (middle + (high - low) / 2 * field / field.std().clamp_min(1e-6)).clamp(low, high)
    return distance.float() <= margin


def _texture(
    tissues: torch.Tensor, brain: torch.Tensor, generator: torch.Generator, config: SynthConfig, *, inside_brain: bool
) -> torch.Tensor:
    """1 + a blotchy multiplicative field, its strength drawn per tissue (no texture on the real brain)."""
    low, high = config.texture_std
    strength = (low + (high - low) * torch.rand(len(TISSUES), generator=generator)).to(tissues.device)
    if not inside_brain:
        strength[list(BRAIN)] = 0.0
    coarse = torch.randn((1, 1, 24, 24, 24), generator=generator).to(tissues.device)
    field = functional.interpolate(coarse, size=tuple(tissues.shape), mode="trilinear", align_corners=True)[0, 0]
    return (1 + strength[tissues] * field / field.std().clamp_min(1e-6)).clamp_min(0)


def field_of_view(
    shape: Sequence[int], brain_extent: Sequence[tuple[int, int]], generator: torch.Generator, probability: float
) -> tuple[slice, slice, slice]:
    """A random box of the canvas, as a scan's field of view would cut a head: the neck anywhere from the canvas's
    edge up to 12 mm above the brain's lowest voxel (the brainstem), now and then the face, the vertex or a side;
    the rest of the brain stays inside. `brain_extent` is the brain's (first, last) voxel index per axis."""

    def draw(low: float, high: float) -> int:
        return int(low + (high - low) * float(torch.rand((), generator=generator)))

    if float(torch.rand((), generator=generator)) >= probability:
        return tuple(slice(0, n) for n in shape)  # type: ignore[return-value]
    box = []
    for axis, (n, (first, last)) in enumerate(zip(shape, brain_extent, strict=True)):
        sometimes = 0.25
        start = draw(0, first) if float(torch.rand((), generator=generator)) < sometimes else 0
        stop = draw(last + 1, n) if float(torch.rand((), generator=generator)) < sometimes else n
        if axis == 2:
            start = draw(0, first + 12)  # the neck: most scans stop somewhere along it
        box.append(slice(start, max(stop, start + 16)))
    return tuple(box)  # type: ignore[return-value]


class HeadSampler(PatchSampler):
    """PatchSampler whose volumes are synthesised per sample from a HeadBank (see the module docstring)."""

    def __init__(
        self,
        bank: HeadBank,
        patch_size: tuple[int, int, int],
        config: AugmentConfig,
        synth: SynthConfig,
        *,
        voxel_mm: float = 1.0,
        **options: object,
    ) -> None:
        box = bank.template_box
        inside = bank.foreground - torch.tensor([s.start for s in box], device=bank.foreground.device)
        stripped = Subject(bank.t1[box], bank.labels[box], inside)
        super().__init__([stripped], patch_size, config, **options)  # type: ignore[arg-type]
        self.bank, self.synth = bank, synth
        weights = torch.tensor([synth.head_weight, synth.stripped_weight, synth.synthetic_weight])
        self.mode_weights = weights / weights.sum()
        nonzero = [torch.nonzero(bank.brain.any(dim=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
        self.brain_extent = [(int(index[0]), int(index[-1])) for index in nonzero]
        # With no margin a stripping mask is the brain itself: the distance map (7 s on the 1 mm canvas, at every
        # start) is only worked out for margins.
        self.distance = signed_distance(bank.brain, voxel_mm) if any(synth.strip_margin_mm) else None

    def _one(self) -> tuple[torch.Tensor, torch.Tensor]:
        mode = MODES[int(torch.multinomial(self.mode_weights, 1, generator=self.generator))]
        if mode == "stripped":
            return super()._one()
        head = int(torch.randint(len(self.bank.heads), (1,), generator=self.generator))
        image, labels = self.volume(head, mode)
        box = field_of_view(image.shape, self.brain_extent, self.generator, self.synth.fov_probability)
        start = torch.tensor([s.start for s in box], device=self.bank.foreground.device)
        stop = torch.tensor([s.stop - 1 for s in box], device=self.bank.foreground.device)
        foreground = torch.minimum(torch.maximum(self.bank.foreground - start, torch.zeros_like(start)), stop - start)
        subject = Subject(image[box], labels[box], foreground)
        volume = self._whole_volume_intensity(subject.image)
        grid = self._grid(subject)
        label = _sample(subject.label, grid, "nearest").round().to(torch.long)
        return self._patch_intensity(_sample(volume, grid, "bilinear")), label

    def volume(self, head: int, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The raw image and labels of one `head` or `synthetic` sample on the whole canvas, stripped or not."""
        image = synthesize(self.bank, head, mode, self.generator, self.synth)
        labels = self.bank.labels if self.bank.head_labels is None else self.bank.head_labels[head]
        chance = self.synth.head_stripped_probability if mode == "head" else self.synth.synthetic_stripped_probability
        if float(torch.rand((), generator=self.generator)) < chance:
            keep = (
                self.bank.brain
                if self.distance is None
                else strip_mask(self.distance, self.synth.strip_margin_mm, self.generator)
            )
            image, labels = image * keep, (keep.float() if self.synth.strip_labels == "mask" else labels * keep)
        return image, labels


def head_sampler(config: TrainConfig, device: torch.device, *, seed: int) -> HeadSampler:
    """The training sampler of a config with synth.enabled, on the heads its dataset lists: labelled with the brain
    mask for synth.target=brain, and the brain with each head's CSF around it for brain_csf (stripped template
    samples: the brain, which is all they show), on a grid data.spacing_mm / 1 mm times coarser."""
    data = config.data
    bank = load_bank(data.root, device)
    if config.synth.brain_mask:
        bank = replace(bank, labels=bank.brain.float())
    if config.synth.target == "brain_csf":
        distance = signed_distance(bank.brain, 1.0).float().cpu().numpy()
        with_csf = [brain_with_csf(head.cpu().numpy(), distance) for head in bank.heads]
        bank = replace(bank, head_labels=[torch.from_numpy(m).float().to(device) for m in with_csf])
    factor = int(data.spacing_mm[0]) if data.spacing_mm else 1
    return HeadSampler(
        coarsened(bank, factor) if factor > 1 else bank,
        tuple(data.patch_size),  # type: ignore[arg-type]
        config.augment,
        config.synth,
        voxel_mm=float(factor),
        clip_percentiles=tuple(data.clip_percentiles),
        foreground_fraction=data.foreground_fraction,
        seed=seed,
        device=device,
    )


def coarsened(bank: HeadBank, factor: int) -> HeadBank:
    """The bank on a grid `factor` times coarser: the template and its probabilities averaged over each block
    (partial volume at the brain's edge), the tissue maps by each block's first voxel, a label where it covers
    most of the block (labels 0/1 only: a brain mask, also each head's own)."""

    def pooled(volume: torch.Tensor) -> torch.Tensor:
        return functional.avg_pool3d(volume.float()[None, None], factor, ceil_mode=True)[0, 0]

    brain = pooled(bank.brain) > 0.5
    labels = (pooled(bank.labels) > 0.5).float()
    foreground = torch.nonzero(labels > 0)
    box = tuple(slice(-(-s.start // factor), s.stop // factor) for s in bank.template_box)
    return HeadBank(
        t1=torch.where(brain, pooled(bank.t1), 0.0),
        grey=pooled(bank.grey).half(),
        white=pooled(bank.white).half(),
        labels=labels,
        heads=[head[::factor, ::factor, ::factor].contiguous() for head in bank.heads],
        template_box=box,  # type: ignore[arg-type]
        foreground=foreground[:: max(1, foreground.shape[0] // 200_000)],
        head_labels=None if bank.head_labels is None else [(pooled(m) > 0.5).float() for m in bank.head_labels],
    )


def bank_from_arrays(arrays: dict[str, np.ndarray], heads: list[np.ndarray], device: torch.device) -> HeadBank:
    """A HeadBank from canvas arrays (T1 and probabilities as stored, 0–255) and tissue maps."""
    t1 = torch.from_numpy(arrays["t1"].astype(np.float32))
    labels = torch.from_numpy(arrays["labels"].astype(np.float32))
    white_median = t1[labels == 2].median() if bool((labels == 2).any()) else t1.max()
    foreground = torch.nonzero(labels > 0)
    box = tuple(slice(before, n - after) for n, (before, after) in zip(t1.shape, PADDING, strict=True))
    return HeadBank(
        t1=(t1 / white_median.clamp_min(1e-6)).to(device),
        grey=torch.from_numpy(arrays["grey"] / np.float32(255)).half().to(device),
        white=torch.from_numpy(arrays["white"] / np.float32(255)).half().to(device),
        labels=labels.to(device),
        heads=[torch.from_numpy(np.ascontiguousarray(h)).to(device) for h in heads],
        template_box=box,  # type: ignore[arg-type]
        foreground=foreground[:: max(1, foreground.shape[0] // 200_000)].to(device),
    )


def load_bank(root: str | Path, device: torch.device) -> HeadBank:
    """The training heads a prepared dataset lists under "heads", on `device`.

    Raises:
        DatasetError: dataset.json lists no heads, or a file is missing or on another grid.
    """
    root = Path(root)
    heads = read_dataset(root).get("heads")
    if not isinstance(heads, dict) or not heads.get("training"):
        raise DatasetError(
            f"{root / 'dataset.json'} lists no generated heads, which synth.enabled needs: build the dataset with "
            "`python -m train prepare-mni152 --out DIR`, or set synth.enabled=false"
        )
    arrays = {key: _read(root / name) for key, name in heads["canvas"].items()}
    maps = [_read(root / entry["tissues"]).astype(np.uint8) for entry in heads["training"]]
    for name, array in [*arrays.items(), *((e["tissues"], m) for e, m in zip(heads["training"], maps, strict=True))]:
        if array.shape != arrays["t1"].shape:
            raise DatasetError(f"{root / name}: shape {array.shape} differs from the canvas {arrays['t1'].shape}")
    arrays["labels"] = training_labels(maps[0])  # one brain: every head carries the template's labels
    return bank_from_arrays(arrays, maps, device)


def brain_validation_cases(root: str | Path, target: str = "brain") -> list[Case]:
    """A brain-extraction model's validation: each held-out full head of the dataset's validation split, with and
    without its skull, against the masks BRAIN_REFERENCES names for the target (brain_csf: the head against the brain
    with its CSF, the stripped head, which shows the brain alone, against the brain)."""
    from .consistency import dataset_heads

    found = []
    for head in dataset_heads(root, "validation"):
        with_skull, stripped = (getattr(head, role) for role in BRAIN_REFERENCES[target])
        if with_skull is None or stripped is None:
            missing = next(role for role in BRAIN_REFERENCES[target] if getattr(head, role) is None)
            raise DatasetError(
                f"{head.head}: the full head lists no '{missing}' mask, which synth.target={target} needs: build the "
                "dataset again with `python -m train prepare-mni152 --out DIR`"
            )
        found += [
            Case(head.head, with_skull, f"{head.name}_head"),
            Case(head.stripped_file(), stripped, f"{head.name}_stripped"),
        ]
    return found


def _read(path: Path) -> np.ndarray:
    """A canvas file in RAS voxel order (as written; reoriented if a tool rewrote it)."""
    try:
        volume = load_volume(path)
    except Unet3dError as e:
        raise DatasetError(f"{path}: {e}") from e
    return np.ascontiguousarray(to_canonical(np.rint(volume.data), canonical_orientation(volume)))
