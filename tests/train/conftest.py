from pathlib import Path

import pytest
from helpers import TINY_CONFIG

from train.config import load_config
from train.synthetic import make_spheres_dataset


@pytest.fixture(scope="session")
def spheres(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_spheres_dataset(tmp_path_factory.mktemp("spheres"), train=3, validation=2, test=2, size=24, seed=0)


@pytest.fixture
def tiny_config(spheres):
    def build(*overrides: str):
        return load_config(TINY_CONFIG, [f"data.root={spheres}", *overrides])

    return build


@pytest.fixture(scope="session")
def tiny_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the three template files under nilearn's names: a small ellipsoid brain (white core, grey
    rim, CSF at the edge), skull-stripped, RAS 1 mm with the world origin at its centre."""
    import nibabel as nib
    import numpy as np

    from train.mni152 import FILES

    folder = tmp_path_factory.mktemp("template")
    shape, centre = (28, 30, 46), (14, 15, 13)  # room above the brain for the layers of the vertex
    affine = np.eye(4)
    affine[:3, 3] = [-c for c in centre]
    grid = np.stack(
        np.meshgrid(*[np.arange(n) - c for n, c in zip(shape, centre, strict=True)], indexing="ij"), axis=-1
    )
    radius = np.linalg.norm(grid / np.array([11.0, 12.0, 10.0]), axis=-1)
    white = np.clip((0.62 - radius) / 0.12 + 0.5, 0, 1)
    grey = np.clip((0.92 - radius) / 0.1 + 0.5, 0, 1) * (1 - white)
    brain = radius < 1.0
    t1 = np.where(brain, 90 + 70 * grey + 130 * white, 0)
    for kind, data in (("t1", t1), ("gm", grey * 255), ("wm", white * 255)):
        nib.save(nib.Nifti1Image(np.rint(data).astype(np.uint8), affine), folder / FILES[kind])
    return folder


@pytest.fixture(scope="session")
def tiny_heads(tmp_path_factory: pytest.TempPathFactory, tiny_template: Path) -> Path:
    """`prepare-mni152` run on the tiny template: heads, full-head validation and test cases included."""
    from train.mni152 import prepare

    out = tmp_path_factory.mktemp("heads")
    prepare(out, source=tiny_template)
    return out
