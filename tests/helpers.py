"""Shared test helpers (plain module: every tests/*/conftest.py is imported under the one name `conftest`)."""

from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import yaml

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
