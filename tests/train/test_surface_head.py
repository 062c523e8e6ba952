"""A real head with surfaces and no brain mask: the cerebrum drawn from closed GIfTI surfaces, and the figures."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import ROOT, TINY_CARD, write_ellipsoid_surface, write_tiny_model

from train.__main__ import main
from train.surface_head import (
    freesurfer_dice,
    freesurfer_reference,
    inside_surface,
    record_surface_head,
    surface_figures,
)
from unet3d import Segmenter

# A grid in LIA orientation, as FreeSurfer writes its conformed scans (pycortex's S1 is one), 1.5 mm voxels.
AFFINE = np.array([[-1.5, 0, 0, 30.0], [0, 0, 1.5, -33.0], [0, -1.5, 0, 35.0], [0, 0, 0, 1]])
SHAPE = (40, 48, 44)


def world(shape=SHAPE, affine=AFFINE):
    i, j, k = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    return np.stack([i, j, k, np.ones_like(i)], -1) @ affine.T


def ellipsoid(points, centre, radii):
    return sum(((points[..., a] - centre[a]) / radii[a]) ** 2 for a in range(3)) < 1


def test_the_inside_of_a_closed_surface_is_the_shape_it_encloses_on_any_oriented_grid(tmp_path):
    centre, radii = (-2.0, 3.0, 1.0), (18.0, 24.0, 14.0)
    write_ellipsoid_surface(tmp_path / "pia_lh.gii", centre, radii)
    inside = inside_surface(tmp_path / "pia_lh.gii", SHAPE, AFFINE)
    truth = ellipsoid(world(), centre, radii)
    assert inside.shape == SHAPE
    # Exact up to the triangles' own departure from the ellipsoid (marching cubes at 0.5 mm).
    assert (inside != truth).sum() <= 0.005 * truth.sum()
    assert not inside[0].any() and not inside[:, :, -1].any()


def test_the_figures_count_tissue_below_the_plane_and_compare_the_results_inside_the_cerebrum_only():
    names = ["background", "grey_matter", "white_matter"]
    full = np.zeros((4, 4, 10), np.uint8)
    full[:, :, 6:] = 2  # the cerebrum: white matter with the skull...
    full[0, :, 6:] = 1
    full[:, :, 0:2] = 1  # ...and 32 voxels of "grey matter" in the neck
    stripped = full.copy()
    stripped[:, :, 0:2] = 0  # stripped to the cerebrum, the neck is gone
    stripped[1, :, 6:] = 1  # and one row more grey matter
    cerebrum = np.zeros(full.shape, bool)
    cerebrum[:, :, 6:] = True
    below = (np.arange(10) < 3)[None, None, :]
    figures = surface_figures(full, stripped, cerebrum, below, names, voxel_ml=0.5)
    assert figures["labelled_ml"] == (64 + 32) * 0.5
    assert figures["below_foramen_magnum_ml"] == 16.0
    assert figures["below_foramen_magnum_fraction"] == round(32 / 96, 5)
    assert figures["cerebrum_ml"] == 32.0
    # Inside the cerebrum: grey 16 vs 32 voxels (16 shared), white 48 vs 32 (32 shared); the neck does not count.
    assert figures["cerebrum_agreement_dice"] == {"grey_matter": round(32 / 48, 4), "white_matter": round(64 / 80, 4)}
    assert figures["outside_cerebrum_above_foramen_magnum_ml"] == 0.0
    assert figures["volume_ml"] == {"grey_matter": (16 + 32) * 0.5, "white_matter": 48 * 0.5}


def test_freesurfer_judges_the_cortex_and_a_white_matter_shell_in_millimetres_not_the_deep_white_surface():
    cerebrum = np.zeros((1, 1, 20), bool)
    cerebrum[..., 2:18] = True
    white = np.zeros_like(cerebrum)
    white[..., 5:15] = True  # 10 voxels of 1 mm x 1 mm x 0.5 mm: 5 mm deep, the middle 2 mm further than 3 mm in
    reference = freesurfer_reference(cerebrum, white, (1.0, 1.0, 0.5))
    assert reference[0, 0].tolist() == [0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 0, 0]
    reference = freesurfer_reference(cerebrum, white, (1.0, 1.0, 1.0))
    assert reference[0, 0].tolist() == [0, 0, 1, 1, 1, 2, 2, 2, 0, 0, 0, 0, 2, 2, 2, 1, 1, 1, 0, 0]
    mask = np.zeros_like(reference)
    mask[..., 3:9] = 1  # grey where FreeSurfer has 2 grey, 3 white and a voxel it does not judge; never white
    names = ["background", "grey_matter", "white_matter"]
    assert freesurfer_dice(mask, reference, names) == {"grey_matter": round(2 * 2 / (5 + 6), 4), "white_matter": 0.0}


def test_the_figures_go_into_the_card_beside_its_other_metrics_with_their_command(tmp_path):
    model = write_tiny_model(tmp_path / "model", card={**TINY_CARD, "metrics": {"test": {"mean_dice": 0.9}}})
    figures = {"model": str(model), "scan": "S9/anatomicals/raw.nii.gz", "files": {"raw.nii.gz": "ab" * 32},
               "below_foramen_magnum_ml": 0.2, "cerebrum_agreement_dice": {"grey_matter": 0.94}}  # fmt: skip
    record_surface_head(model, "S9", figures, "python -m train surface-head --model M --subject S9")
    card = yaml.safe_load((model / "model.yaml").read_text())
    assert card["metrics"]["test"] == {"mean_dice": 0.9}
    recorded = card["metrics"]["surface_heads"]["S9"]
    assert recorded["below_foramen_magnum_ml"] == 0.2 and recorded["files"] == {"raw.nii.gz": "ab" * 32}
    assert recorded["command"] == "python -m train surface-head --model M --subject S9" and recorded["date"]
    assert "model" not in recorded and "scan" not in recorded
    assert "below_foramen_magnum_ml: 0.2" in (model / "README.md").read_text()
    Segmenter.from_pretrained(model)  # still a card the loader takes


def test_update_card_needs_a_model_directory(tmp_path, capsys):
    argv = ["surface-head", "--model", "owner/name", "--subject", str(tmp_path), "--foramen-magnum-z", "-66"]
    assert main([*argv, "--update-card"]) == 1
    assert "--update-card needs a model directory" in capsys.readouterr().err


S1 = ROOT / "data" / "pycortex-S1"
S1_FIGURES = ROOT / "bench" / "results" / "surface-head-s1.json"


@pytest.mark.slow
@pytest.mark.skipif(not (S1 / "anatomicals" / "raw.nii.gz").is_file(), reason="needs scripts/get-pycortex-s1.sh")
def test_the_shipped_model_on_pycortex_s1_gives_the_figures_the_docs_report(tmp_path):
    """A real full head (skull, face, tongue, neck): the figures recorded in bench/results and quoted in the docs
    re-measure, and the command writes them."""
    recorded = json.loads(S1_FIGURES.read_text())
    out = tmp_path / "s1.json"
    argv = ["surface-head", "--model", str(ROOT / "models" / "unet3d-brain-tissue"), "--subject", str(S1)]
    assert main([*argv, "--foramen-magnum-z", str(recorded["foramen_magnum_z_mm"]), "--out", str(out)]) == 0
    measured = json.loads(out.read_text())
    assert {Path(p).name: s for p, s in measured["files"].items()} == {
        Path(p).name: s for p, s in recorded["files"].items()
    }
    for key in ("labelled_ml", "below_foramen_magnum_ml", "cerebrum_ml", "outside_cerebrum_above_foramen_magnum_ml"):
        assert measured[key] == pytest.approx(recorded[key], abs=1.0), key
    for name, value in recorded["cerebrum_agreement_dice"].items():
        assert measured["cerebrum_agreement_dice"][name] == pytest.approx(value, abs=0.002), name
    for result, figures in recorded["freesurfer_dice"].items():
        for name, value in figures.items():
            assert measured["freesurfer_dice"][result][name] == pytest.approx(value, abs=0.002), (result, name)
