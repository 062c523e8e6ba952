"""On-the-fly, seeded augmentation and patch sampling on the training device.

Each sample: intensity changes on the whole volume (bias field, noise) → the same percentile
min–max normalisation as inference → a patch drawn through a random affine (+ optional elastic)
grid with foreground oversampling → patch-level gamma, monotone intensity curve, contrast, blur and
low-resolution simulation. Everything uses one `torch.Generator`, so a seed reproduces the stream.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional

from .config import AugmentConfig


@dataclass
class Subject:
    """A training volume in canonical orientation on the training device."""

    image: torch.Tensor  # (I, J, K) float32, raw intensities
    label: torch.Tensor  # (I, J, K) float32 class indices (float for grid_sample)
    foreground: torch.Tensor  # (N, 3) long voxel indices with label > 0


class PatchSampler:
    """Draws augmented `(B, 1, P, P, P)` image patches and `(B, P, P, P)` label patches."""

    def __init__(
        self,
        subjects: list[Subject],
        patch_size: tuple[int, int, int],
        config: AugmentConfig,
        *,
        clip_percentiles: tuple[float, float] = (1.0, 99.0),
        foreground_fraction: float = 0.5,
        seed: int = 0,
        device: torch.device,
    ) -> None:
        if not subjects:
            raise ValueError("no training subjects")
        self.subjects, self.patch, self.config = subjects, patch_size, config
        self.clip = (clip_percentiles[0] / 100.0, clip_percentiles[1] / 100.0)
        self.foreground_fraction = foreground_fraction
        self.device = device
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        # Volume-sized noise is drawn on the device itself; its generator is seeded from the same seed.
        self.device_generator = torch.Generator(device=device).manual_seed(seed + 1)
        self.offsets = _offset_grid(patch_size, device)

    def get_state(self) -> torch.Tensor:
        """Both generators' states as one uint8 tensor (checkpointed, so a resumed run draws what it would have)."""
        return torch.cat([self.generator.get_state(), self.device_generator.get_state()])

    def set_state(self, state: torch.Tensor) -> None:
        size = self.generator.get_state().numel()
        self.generator.set_state(state[:size].clone())
        self.device_generator.set_state(state[size:].clone())

    def uniform(self, low: float = 0.0, high: float = 1.0, size: tuple[int, ...] = ()) -> torch.Tensor:
        return low + (high - low) * torch.rand(size, generator=self.generator)

    def between(self, bounds: Sequence[float]) -> float:
        """A uniform draw from a config range `[low, high]`."""
        return float(self.uniform(bounds[0], bounds[1]))

    def chance(self, probability: float) -> bool:
        return bool(self.uniform() < probability)

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = [], []
        for _ in range(batch_size):
            image, label = self._one()
            images.append(image)
            labels.append(label)
        return torch.stack(images).unsqueeze(1), torch.stack(labels)

    def _one(self) -> tuple[torch.Tensor, torch.Tensor]:
        index = int(torch.randint(len(self.subjects), (1,), generator=self.generator))
        subject = self.subjects[index]
        volume = self._whole_volume_intensity(subject.image)
        grid = self._grid(subject)
        image = _sample(volume, grid, "bilinear")
        label = _sample(subject.label, grid, "nearest").round().to(torch.long)
        return self._patch_intensity(image), label

    def _whole_volume_intensity(self, image: torch.Tensor) -> torch.Tensor:
        c = self.config
        volume = image
        if self.chance(c.bias_probability):
            volume = volume * _bias_field(image.shape, float(self.uniform(0.1, c.bias_amplitude)), self)
        if self.chance(c.noise_probability):
            top = torch.quantile(_subsample(volume), 0.99)
            sigma = self.between(c.noise_std) * float(top)
            noise = torch.randn(volume.shape, generator=self.device_generator, device=self.device)
            volume = (volume + sigma * noise).abs()
        flat = _subsample(volume)
        low, high = torch.quantile(flat, torch.tensor(self.clip, device=flat.device))
        return ((volume.clamp(low, high) - low) / (high - low).clamp_min(1e-6)).float()

    def _grid(self, subject: Subject) -> torch.Tensor:
        c = self.config
        shape = torch.tensor(subject.image.shape, dtype=torch.float32)
        if subject.foreground.numel() and self.chance(self.foreground_fraction):
            pick = int(torch.randint(subject.foreground.shape[0], (1,), generator=self.generator))
            centre = subject.foreground[pick].float().cpu()
        else:
            centre = self.uniform(size=(3,)) * (shape - 1)
        angles = torch.deg2rad(self.uniform(-c.rotation_degrees, c.rotation_degrees, (3,)))
        scale = self.between(c.scale_range) * (1 + self.uniform(-c.anisotropic_scale, c.anisotropic_scale, (3,)))
        matrix = torch.from_numpy(rotation_matrix(angles.tolist())).float() @ torch.diag(scale)
        for axis in c.flip_axes:
            if self.chance(c.flip_probability):
                matrix[:, axis] = -matrix[:, axis]
        coords = self.offsets @ matrix.T.to(self.device) + centre.to(self.device)
        if self.chance(c.elastic_probability):
            coords = coords + _smooth_displacement(self.patch, c.elastic_magnitude, self)
        # grid_sample wants (x, y, z) = (K, J, I) order, normalised to [-1, 1] (align_corners=True).
        normalised = 2.0 * coords / (shape.to(self.device) - 1) - 1.0
        return normalised.flip(-1)

    def _patch_intensity(self, patch: torch.Tensor) -> torch.Tensor:
        c = self.config
        if self.chance(c.lowres_probability):
            patch = _low_resolution(patch, self.between(c.lowres_factor), self)
        if self.chance(c.blur_probability):
            patch = _blur(patch, self.between(c.blur_sigma))
        patch = patch.clamp(0, 1) ** math.exp(self.between([math.log(g) for g in c.gamma_range]))
        if self.chance(c.intensity_curve_probability):
            patch = _monotone_curve(patch, self)
        contrast = self.between(c.contrast_range)
        patch = (patch - 0.5) * contrast + 0.5 + float(self.uniform(-0.05, 0.05))
        return patch.clamp(0, 1)


def _offset_grid(patch: tuple[int, int, int], device: torch.device) -> torch.Tensor:
    axes = [torch.arange(p, dtype=torch.float32) - (p - 1) / 2.0 for p in patch]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).to(device)


def _sample(volume: torch.Tensor, grid: torch.Tensor, mode: str) -> torch.Tensor:
    out = functional.grid_sample(volume[None, None], grid[None], mode=mode, padding_mode="zeros", align_corners=True)
    return out[0, 0]


def _subsample(volume: torch.Tensor, size: int = 1 << 20) -> torch.Tensor:
    flat = volume.reshape(-1)
    return flat[:: max(1, flat.numel() // size)]


def rotation_matrix(angles: Sequence[float] | np.ndarray) -> np.ndarray:
    """3×3 rotation by `angles` (radians) about the first, second and third axis, applied in that order."""
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _smooth_field(shape: tuple[int, ...], channels: int, sampler: PatchSampler, coarse: int = 5) -> torch.Tensor:
    noise = torch.randn((1, channels, coarse, coarse, coarse), generator=sampler.generator).to(sampler.device)
    return functional.interpolate(noise, size=tuple(shape), mode="trilinear", align_corners=True)[0]


def _bias_field(shape: tuple[int, ...], amplitude: float, sampler: PatchSampler) -> torch.Tensor:
    field = _smooth_field(shape, 1, sampler, coarse=4)[0]
    return torch.exp(amplitude * field / field.abs().max().clamp_min(1e-6))


def _smooth_displacement(patch: tuple[int, int, int], magnitude: float, sampler: PatchSampler) -> torch.Tensor:
    field = _smooth_field(patch, 3, sampler)
    return (magnitude * field / field.abs().amax().clamp_min(1e-6)).permute(1, 2, 3, 0)


def _blur(patch: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=patch.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    out = patch[None, None]
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = kernel.numel()
        padding = [0, 0, 0]
        padding[axis] = radius
        out = functional.conv3d(out, kernel.view(shape), padding=tuple(padding))
    return out[0, 0]


def _low_resolution(patch: torch.Tensor, factor: float, sampler: PatchSampler) -> torch.Tensor:
    """Thick-slice simulation: down-sample along one random axis (or all), then back up, trilinear."""
    size = list(patch.shape)
    axis = int(torch.randint(4, (1,), generator=sampler.generator))
    axes = range(3) if axis == 3 else (axis,)
    small = list(size)
    for a in axes:
        small[a] = max(2, round(size[a] / factor))
    low = functional.interpolate(patch[None, None], size=small, mode="area")
    return functional.interpolate(low, size=size, mode="trilinear", align_corners=False)[0, 0]


def _monotone_curve(patch: torch.Tensor, sampler: PatchSampler, knots: int = 6) -> torch.Tensor:
    """A random increasing piecewise-linear map of [0, 1] onto itself."""
    steps = sampler.uniform(0.3, 1.0, (knots,))
    ys = torch.cat([torch.zeros(1), torch.cumsum(steps, 0)])
    ys = (ys / ys[-1]).to(patch.device)
    position = patch.clamp(0, 1) * knots
    index = position.floor().clamp(max=knots - 1).long()
    weight = position - index
    return ys[index] * (1 - weight) + ys[index + 1] * weight
