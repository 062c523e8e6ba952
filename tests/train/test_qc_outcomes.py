"""QC with the shipped model on held-out scans (never used to calibrate it): what must pass and what must be caught.

The test scans are rebuilt from nilearn's template with the dataset's own generators and test seeds, as
`python -m train prepare-mni152` writes them to imagesTs/ and fullheadTs/; the real head is Debian's mricron-data
(scripts/test.sh installs it).
"""

from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT

from train.fullhead import FULLHEAD_CASES, HEAD_SEEDS, cached_brain, render_case
from train.mni152 import TEST_CASES, TEST_SEED, build_case, load_template
from train.qc_cases import ct_volume, noise_volume
from unet3d import Segmenter, Volume, volume_from_array
from unet3d.errors import InvalidVolumeError

MODEL = ROOT / "models" / "unet3d-brain-tissue"
EXAMPLES = ROOT / "api" / "examples"
COLIN27 = Path("/usr/share/mricron/templates")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    return Segmenter.from_pretrained(MODEL, device="cpu")


@pytest.fixture(scope="module")
def template():
    return load_template()


def volume_of(image, name: str) -> Volume:
    return volume_from_array(np.asarray(image.dataobj, dtype=np.float32), image.affine, name=name)


def warnings_of(segmenter: Segmenter, volume: Volume | Path) -> list[str]:
    prediction = segmenter.predict(volume)
    assert prediction.qc is not None
    return list(prediction.qc.warnings)


@pytest.mark.parametrize("case", TEST_CASES, ids=[c.name for c in TEST_CASES])
def test_the_held_out_template_scans_get_no_warning(segmenter, template, case):
    image, _ = build_case(case, TEST_SEED, template)
    assert warnings_of(segmenter, volume_of(image, case.name)) == []


def test_a_ct_and_a_noise_volume_are_told_they_are_not_t1_mri(segmenter):
    _, _, brain = cached_brain(None)
    ct = warnings_of(segmenter, ct_volume(brain, HEAD_SEEDS["test"][0], tight=True))
    assert len(ct) == 1 and "CT scan" in ct[0]
    for seed in (4000, 4001):  # Gaussian at 1 mm, uniform at 1.2 mm
        refused = ""
        try:
            noise = warnings_of(segmenter, noise_volume(seed))
        except InvalidVolumeError as e:  # the chain's first stage found no brain in it: a clean refusal
            refused, noise = str(e), []
        if refused:
            assert "found no brain in this volume" in refused
        else:
            assert len(noise) == 1 and "looks like noise" in noise[0]


@pytest.mark.parametrize(("flip", "words"), [(2, "upside down"), (1, "mirrored front to back")])
def test_a_flipped_header_gets_the_orientation_warning(segmenter, template, flip, words):
    image, _ = build_case(TEST_CASES[0], TEST_SEED, template)
    mirror = np.eye(4)
    mirror[flip, flip] = -1.0
    volume = volume_from_array(np.asarray(image.dataobj, dtype=np.float32), mirror @ image.affine)
    found = warnings_of(segmenter, volume)
    assert len(found) == 1 and words in found[0] and "orientation header" in found[0]


def test_a_1_mm_scan_declared_as_2_mm_gets_the_volume_warning(segmenter, template):
    image, _ = build_case(TEST_CASES[0], TEST_SEED, template)  # LPS, 1 mm
    affine = image.affine.copy()
    affine[:3, :3] *= 2.0
    found = warnings_of(segmenter, volume_from_array(np.asarray(image.dataobj, dtype=np.float32), affine))
    assert len(found) == 1 and "voxel size in the header" in found[0]


def test_a_generated_full_head_and_its_stripped_copy_pass(segmenter):
    """The shipped model is a chain (a brain-extraction stage first): a head with its skull is what it expects."""
    _, arrays, brain = cached_brain(None)
    case = FULLHEAD_CASES["test"][0]
    rendered = render_case(brain, arrays, HEAD_SEEDS["test"][0], case)
    assert warnings_of(segmenter, volume_of(rendered["head"], case.name)) == []
    assert warnings_of(segmenter, volume_of(rendered["stripped"], case.name)) == []


def test_the_ui_examples_full_head_and_mni_brain_get_no_warning(segmenter):
    assert warnings_of(segmenter, EXAMPLES / "fullhead_t1.nii.gz") == []
    assert warnings_of(segmenter, EXAMPLES / "mni152_t1.nii.gz") == []


@pytest.mark.skipif(not (COLIN27 / "ch2.nii.gz").is_file(), reason="needs Debian's mricron-data (scripts/test.sh)")
def test_a_real_head_colin27_and_its_bet_brain_get_no_warning(segmenter):
    assert warnings_of(segmenter, COLIN27 / "ch2.nii.gz") == []
    assert warnings_of(segmenter, COLIN27 / "ch2bet.nii.gz") == []
