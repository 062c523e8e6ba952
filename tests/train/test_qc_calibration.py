"""QC calibration: how limits are chosen, the negatives it builds, and `python -m train calibrate-qc` end to end."""

import json

import numpy as np
import pytest
import yaml
from helpers import TINY_CARD, write_tiny_model

from train.__main__ import main
from train.qc_calibration import _choose, evidence
from train.qc_cases import QCCase, _cut, _inverted, _padded, _rescaled, calibration_cases
from unet3d import load_card, volume_from_array
from unet3d.card import DEFAULT_QC_LIMITS

NAMES = [{"index": i, "name": n, "color": c} for i, (n, c) in enumerate((("background", "#000000"),
          ("grey_matter", "#e69f00"), ("white_matter", "#56b4e9")))]  # fmt: skip


def cases(kind: str, numbers: list[float], name: str) -> list[tuple[QCCase, dict[str, float | None]]]:
    return [(QCCase(f"{kind}{i}", kind, lambda: None), {name: v}) for i, v in enumerate(numbers)]  # type: ignore[arg-type, return-value]


def test_warn_lies_halfway_between_the_worst_scan_and_the_nearest_negative():
    values = cases("stripped", [0.09, 0.1], "uncertainty") + cases("ct", [0.3, 0.5], "uncertainty")
    limit, figures = _choose("uncertainty", values, ("stripped",), ("ct",))
    assert (limit.ok, limit.warn) == (0.1, 0.2)
    assert figures["passes"] == "2 stripped: 0.09 to 0.1"
    assert figures["catches"] == "2 ct: 0.3 to 0.5, 2/2 beyond warn"
    low = cases("stripped", [0.95, 0.98], "structure") + cases("noise", [0.01, 0.05], "structure")
    assert _choose("structure", low, ("stripped",), ("noise",))[0].warn == 0.5  # low values are bad here


def test_negatives_the_model_refused_leave_warn_as_far_from_ok_as_the_default():
    values = cases("stripped", [0.95, 0.98], "structure") + cases("full_head", [0.88], "structure")
    limit, figures = _choose("structure", values, ("stripped", "full_head"), ("noise",), refused=2)
    default = DEFAULT_QC_LIMITS["structure"]
    assert limit.ok == 0.88 and limit.warn == pytest.approx(0.88 + default.warn - default.ok)
    assert figures["catches"] == "2 noise: all refused"
    with pytest.raises(ValueError, match="no values to calibrate structure on"):
        _choose("structure", values, ("stripped", "full_head"), ("noise",))  # nothing measured, nothing refused


def test_full_heads_must_pass_every_check_but_skull_stripping_when_the_model_takes_them():
    stripped_only, full_heads = evidence(True), evidence(False)
    assert stripped_only["uncertainty"] == (("stripped",), ("ct", "noise", "t2_like", "full_head"))
    assert full_heads["uncertainty"] == (("stripped", "full_head"), ("ct", "noise", "t2_like"))
    assert full_heads["cut_fraction"] == (("stripped", "full_head"), ("cut",))
    assert full_heads["structure"] == stripped_only["structure"] == (("stripped", "full_head"), ("noise",))
    assert full_heads["enclosed_background"] == stripped_only["enclosed_background"] == (("stripped",), ("full_head",))


def test_the_field_of_view_share_is_split_geometrically():
    values = cases("stripped", [0.16, 0.2], "fov_fraction") + cases("large_fov", [0.01], "fov_fraction")
    assert _choose("fov_fraction", values, ("stripped",), ("large_fov",))[0].warn == 0.04


def test_an_overlap_keeps_warn_halfway_to_the_negatives_beyond_ok_and_says_what_slips_through():
    values = cases("stripped", [0.1, 0.3], "uncertainty") + cases("t2_like", [0.2, 0.6], "uncertainty")
    limit, figures = _choose("uncertainty", values, ("stripped",), ("t2_like",))
    # 0.2 passes as a validation scan would: no limit catches it, and it does not pull warn onto the scans
    assert limit.ok == 0.3 and limit.warn == pytest.approx(0.45) and figures["catches"].endswith("1/2 beyond warn")
    low = cases("stripped", [0.08, 0.4], "t1_contrast") + cases("t2_like", [-1.0, -0.1, 1.0], "t1_contrast")
    limit, figures = _choose("t1_contrast", low, ("stripped",), ("t2_like",))
    assert limit.ok == 0.08 and limit.warn == pytest.approx(-0.01) and figures["catches"].endswith("2/3 beyond warn")
    inside = cases("stripped", [0.1, 0.3], "uncertainty") + cases("t2_like", [0.2, 0.3], "uncertainty")
    limit, figures = _choose("uncertainty", inside, ("stripped",), ("t2_like",))  # none beyond: warn just past ok
    assert limit.warn == pytest.approx(0.33) and figures["catches"].endswith("0/2 beyond warn")


def test_which_side_is_bad_is_the_checks_own_wherever_the_negatives_lie():
    # Measured on 2.3's card: T2-like images its brain stage barely found measured up to +0.68 "T1 contrast", above
    # every real T1; the limit must still warn about too little contrast, never about strong T1 contrast.
    values = cases("stripped", [0.09, 0.17], "t1_contrast") + cases("t2_like", [-0.05, 0.3, 0.5, 0.68], "t1_contrast")
    limit, figures = _choose("t1_contrast", values, ("stripped",), ("t2_like",))
    assert limit.ok == 0.09 and limit.warn == pytest.approx(0.02) and figures["catches"].endswith("1/4 beyond warn")
    high = cases("stripped", [0.09, 0.1], "uncertainty") + cases("ct", [0.01, 0.02, 0.5], "uncertainty")
    limit, figures = _choose("uncertainty", high, ("stripped",), ("ct",))
    assert limit.ok == 0.1 and limit.warn == pytest.approx(0.3) and figures["catches"].endswith("1/3 beyond warn")


def test_the_negatives_change_what_they_claim():
    data = np.zeros((20, 24, 30), dtype=np.float32)
    data[5:15, 6:18, 5:25] = 100.0
    data[8:12, 9:15, 8:22] = 200.0  # "white matter", brighter
    brain = data > 0
    volume = volume_from_array(data, np.diag([-1.0, -1.0, 1.0, 1.0]))  # LPS
    assert _rescaled(volume, 2.0).spacing_mm == (2.0, 2.0, 2.0)
    inverted = _inverted(volume, brain)
    assert inverted.data[10, 12, 15] < inverted.data[6, 7, 6] and inverted.data[0, 0, 0] == 0
    top = _cut(volume, brain, "S", 0.3)  # superior is +k here
    assert top.shape == (20, 24, 25 - 6) and np.allclose(top.affine, volume.affine)
    front = _cut(volume, brain, "A", 0.25)  # anterior is -j in LPS: the first rows go
    assert front.shape == (20, 24 - 9, 30)
    assert np.allclose(front.affine[:3, 3], volume.affine[:3, :3] @ [0, 9, 0])  # same world place for each voxel
    padded = _padded(volume)
    assert padded.shape == (40, 48, 60) and np.allclose(padded.affine @ [10, 12, 15, 1], volume.affine @ [0, 0, 0, 1])


def test_the_cases_come_from_validation_only(tiny_heads):
    found = calibration_cases(tiny_heads)
    kinds = {case.kind for case in found}
    assert kinds == {"stripped", "full_head", "flip_si", "flip_ap", "spacing_x0.5", "spacing_x1.5", "t2_like", "cut",
                     "large_fov", "noise", "ct"}  # fmt: skip
    assert not any("test" in case.name for case in found)
    assert all(case.brain is not None for case in found if case.kind == "full_head")


@pytest.mark.slow
def test_calibrate_qc_writes_a_qc_section_the_card_accepts(tiny_heads, tmp_path, capsys):
    model = write_tiny_model(tmp_path / "model", card={**TINY_CARD, "classes": NAMES})
    assert main(["calibrate-qc", "--model", str(model), "--data", str(tiny_heads), "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    card = load_card(model / "model.yaml")
    assert card.qc.calibrated and card.qc.prior is not None and card.qc.prior_grid == 8
    section = yaml.safe_load((model / "model.yaml").read_text())["qc"]
    assert printed["limits"] == section["limits"]
    assert section["calibration"]["command"].startswith("python -m train calibrate-qc --model")
    assert "validation split (never test)" in section["calibration"]["data"]
    assert set(section["calibration"]["figures"]) == set(section["limits"])
    assert section["calibration"]["negatives"]["ct"] == 4 and "val_" in " ".join(section["calibration"]["validation"])
    assert "## Quality control" in (model / "README.md").read_text()
