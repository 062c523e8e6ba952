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
