"""Shared test helpers (plain module: every tests/*/conftest.py is imported under the one name `conftest`)."""

import os
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import yaml
from nibabel.gifti import GiftiDataArray, GiftiImage
from skimage.measure import marching_cubes

from unet3d import UNet3D

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_MODEL = ROOT / "models" / "unet3d-brain-tissue"
TINY_CONFIG = ROOT / "train" / "configs" / "tiny.yaml"
STRICT_KEY = "s3cret-key"  # UNET3D_API_KEY of the strict test server (tests/api/conftest.py)
TINY_CARD = {
    "name": "tiny-test",
    "version": "0.0.1",
    "classes": [
        {"name": "background", "color": "#000000"},
        {"name": "shell", "color": "#ff0000"},
        {"name": "core", "color": "#00ff00"},
    ],
    "input": {"channels": 1, "clip_percentiles": [1, 99], "pad_to_multiple": 4, "spacing_mm": None},
    "inference": {"patch_size": [16, 16, 16], "overlap": 0.25, "crop_foreground": False},
}


def write_tiny_model(
    directory: Path, *, seed: int = 0, card: dict | None = None, num_classes: int = 3, **arguments
) -> Path:
    """A random UNet3D (base 4, depth 2; 3 classes, or 1 sigmoid output for a binary card) with non-trivial
    BatchNorm statistics, saved as a model dir."""
    torch.manual_seed(seed)
    model = UNet3D(num_classes=num_classes, base_channels=4, depth=2, **arguments)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm3d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    model.save_pretrained(directory)
    (directory / "model.yaml").write_text(yaml.safe_dump(card or TINY_CARD), encoding="utf-8")
    return directory


BINARY_CARD = {
    **TINY_CARD,
    "classes": [{"name": "background", "color": "#000000"}, {"name": "blob", "color": "#ff0000"}],
}


def write_chained_model(
    directory: Path, *, seed: int = 0, threshold: float | None = None, edge: dict | None = None
) -> Path:
    """A tiny tissue model with a tiny brain-extraction model (2 classes) in brain_mask/ as its first stage (which
    keeps voxels from brain probability `threshold`, None: the card's default; and `edge`, the card's
    inference.brain_mask_edge)."""
    inference = {**TINY_CARD["inference"], "brain_mask": True}
    if threshold is not None:
        inference["brain_mask_threshold"] = threshold
    if edge is not None:
        inference["brain_mask_edge"] = edge
    write_tiny_model(directory, seed=seed, card={**TINY_CARD, "inference": inference})
    write_tiny_model(directory / "brain_mask", seed=seed + 1, card=BINARY_CARD, num_classes=2)
    return directory


def sphere_volume(shape=(24, 20, 16), seed: int = 0) -> np.ndarray:
    """A smooth blob with noise: enough structure for a random network to give a mixed mask."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    blob = np.exp(-3 * (grid**2).sum(0)) * 1000
    return (blob + rng.normal(0, 30, shape)).astype(np.float32)


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None, **header) -> Path:
    image = nib.Nifti1Image(data, np.eye(4) if affine is None else affine)
    for key, value in header.items():
        image.header[key] = value
    nib.save(image, path)
    return path


PROC_IO = Path("/proc/self/io")


class FileReads:
    """While the block runs: how often files whose name ends with `name` are opened for reading, and how many bytes
    this process reads from storage (all its threads: an in-process server's too).

    Opens are seen through a Python audit hook (PEP 578: every `open()`, nibabel's and gzip's included), bytes
    through the kernel's count in /proc/self/io (`rchar`: what read() returned, whoever called it; Linux only).
    """

    _active: list["FileReads"] = []  # noqa: RUF012 (one hook for the process: audit hooks cannot be removed)
    _hooked = False

    def __init__(self, name: str) -> None:
        self.name, self.opens, self.bytes = name, 0, 0

    def __enter__(self) -> "FileReads":
        if not FileReads._hooked:
            sys.addaudithook(FileReads._audit)
            FileReads._hooked = True
        self._start = _bytes_read()
        FileReads._active.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        FileReads._active.remove(self)
        self.bytes = _bytes_read() - self._start

    @staticmethod
    def _audit(event: str, args: tuple) -> None:
        if event != "open" or not FileReads._active or not isinstance(args[0], str | bytes | os.PathLike):
            return
        path, mode, flags = os.fsdecode(args[0]), args[1], args[2]
        if (mode is None and flags & os.O_ACCMODE != os.O_RDONLY) or (isinstance(mode, str) and "r" not in mode):
            return  # written, not read
        for reads in FileReads._active:
            reads.opens += path.endswith(reads.name)


def _bytes_read() -> int:
    for line in PROC_IO.read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise RuntimeError(f"no rchar in {PROC_IO}")


def write_ellipsoid_surface(path, centre, radii):
    """A closed triangle surface (world mm) of an ellipsoid, as FreeSurfer's pial surfaces are stored."""
    step = 0.5
    axes = [np.arange(c - r - 2, c + r + 2, step) for c, r in zip(centre, radii, strict=True)]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    field = ((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + ((z - centre[2]) / radii[2]) ** 2
    vertices, faces, _, _ = marching_cubes(field, level=1.0, spacing=(step, step, step))
    vertices = vertices + np.array([a[0] for a in axes])
    image = GiftiImage(
        darrays=[
            GiftiDataArray(vertices.astype(np.float32), intent="NIFTI_INTENT_POINTSET"),
            GiftiDataArray(faces.astype(np.int32), intent="NIFTI_INTENT_TRIANGLE"),
        ]
    )
    nib.save(image, path)


def write_surface_subject(directory: Path, shape=(40, 36, 32)) -> Path:
    """A pycortex-style subject (anatomicals/raw.nii.gz, surfaces/{pia,wm}_{lh,rh}.gii) of a blob: each hemisphere's
    pial and white surfaces are nested ellipsoids in the volume's world (1 mm, RAS, centred on the origin)."""
    affine = np.eye(4)
    affine[:3, 3] = -np.array(shape) / 2
    (directory / "anatomicals").mkdir(parents=True)
    (directory / "surfaces").mkdir()
    nib.save(nib.Nifti1Image(sphere_volume(shape, seed=5), affine), directory / "anatomicals" / "raw.nii.gz")
    for side, x in (("lh", -6.0), ("rh", 6.0)):
        write_ellipsoid_surface(directory / "surfaces" / f"pia_{side}.gii", (x, 0.0, 0.0), (5.0, 12.0, 9.0))
        write_ellipsoid_surface(directory / "surfaces" / f"wm_{side}.gii", (x, 0.0, 0.0), (3.0, 9.0, 6.0))
    return directory
