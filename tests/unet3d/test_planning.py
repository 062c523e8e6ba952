"""Planning: whole pass or sliding window, and the memory estimates behind the choice and the up-front refusal."""

from dataclasses import replace

import pytest
import torch
from torch import nn

from unet3d import UNet3D
from unet3d.errors import ParameterError
from unet3d.planning import (
    activation_bytes_per_voxel,
    memory_budget_mb,
    network_shape,
    plan_inference,
    predict_bytes,
    predict_peak_bytes,
    stitch_bytes,
    whole_pass_bytes,
)

OPTIONS = {"patch_size": (8, 8, 8), "overlap": 0.25, "blending": "gaussian", "device": torch.device("cpu")}


class Pointwise(nn.Module):
    """Two classes from a position-independent rule; its input sizes must be multiples of 4."""

    num_classes = 2
    pad_multiple = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([0.5 - x, x - 0.5], dim=1)


def test_auto_mode_picks_whole_within_the_memory_budget_and_sliding_beyond():
    small = plan_inference(Pointwise(), (16, 16, 16), mode="auto", memory_budget_mb=64, **OPTIONS)
    large = plan_inference(Pointwise(), (512, 512, 400), mode="auto", memory_budget_mb=64, **OPTIONS)
    assert small.mode == "whole" and large.mode == "sliding"
    assert small.precision in ("fp32", "bf16") and small.batch_size == large.batch_size == 1  # one window at a time


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"overlap": 1.0}, r"overlap must be a number in \[0, 1\), got 1.0"),
        ({"patch_size": (8, 8, 6)}, "patch_size must be one size or three, each a multiple of 4"),
        ({"mode": "fast"}, "mode must be one of auto, whole, sliding, got 'fast'"),
        ({"pad_multiple": 6}, r"pad_multiple \(6\) must be a multiple of 2\*\*depth = 4"),
    ],
)
def test_invalid_window_settings_are_refused(options, message):
    arguments = {"mode": "auto", "memory_budget_mb": 10, **OPTIONS, **options}
    with pytest.raises(ParameterError, match=message):
        plan_inference(Pointwise(), (16, 16, 16), **arguments)


def test_a_sliding_window_never_extends_past_the_padded_volume():
    plan = plan_inference(Pointwise(), (20, 6, 30), mode="sliding", memory_budget_mb=10, **OPTIONS)
    assert plan.window(network_shape((20, 6, 30), plan.pad_multiple)) == (8, 8, 8)
    assert plan.window((20, 4, 32)) == (8, 4, 8)
    assert network_shape((20, 6, 30), 8) == (24, 8, 32)


def test_activation_estimates_scale_with_the_width_the_voxels_and_the_precision():
    narrow, wide = UNet3D(base_channels=4, depth=2), UNet3D(base_channels=8, depth=2)
    assert activation_bytes_per_voxel(wide, 2) > activation_bytes_per_voxel(narrow, 2)
    assert activation_bytes_per_voxel(Pointwise(), 4) == 2 * activation_bytes_per_voxel(Pointwise(), 2)
    assert whole_pass_bytes(narrow, (15, 16, 16), "fp32", 4) == 16**3 * activation_bytes_per_voxel(narrow, 4)
    assert whole_pass_bytes(narrow, (16, 16, 16), "bf16", 4) < whole_pass_bytes(narrow, (16, 16, 16), "fp32", 4)


def test_the_host_budget_is_half_the_available_memory_and_never_below_the_cards(monkeypatch):
    monkeypatch.setattr("unet3d.planning.available_bytes", lambda: 16 * 2**30)
    assert memory_budget_mb(torch.device("cpu"), 1024) == 8 * 1024
    monkeypatch.setattr("unet3d.planning.available_bytes", lambda: 1 * 2**30)
    assert memory_budget_mb(torch.device("cpu"), 1024) == 1024
    monkeypatch.setattr("unet3d.planning.available_bytes", lambda: None)
    assert memory_budget_mb(torch.device("cpu"), 1536) == 1536


def test_a_host_whole_pass_runs_its_top_decoder_in_slabs_and_plans_for_less_memory():
    model = UNet3D(num_classes=3, base_channels=16, depth=4)
    brain = (176, 208, 176)
    options = {**OPTIONS, "patch_size": (128, 128, 128)}
    plan = plan_inference(model, brain, mode="auto", memory_budget_mb=1536, precision="fp32", **options)
    assert plan.mode == "whole" and plan.slab_rows == 68  # 2.5 M voxels of a 208×176 cross-section, even
    slabbed = whole_pass_bytes(model, brain, "fp32", slabbed=True)
    assert slabbed < 0.6 * whole_pass_bytes(model, brain, "fp32") and slabbed < 1536 * 2**20
    sliding = plan_inference(model, brain, mode="sliding", memory_budget_mb=1536, **options)
    cuda = plan_inference(
        model, brain, mode="whole", memory_budget_mb=1536, **{**options, "device": torch.device("cuda")}
    )
    assert sliding.slab_rows is None and cuda.slab_rows is None
    assert plan_inference(Pointwise(), brain, mode="whole", memory_budget_mb=1536, **OPTIONS).slab_rows is None


def test_predict_estimates_grow_with_the_grids_the_classes_and_the_probabilities():
    base = {"num_classes": 3, "activation_bytes": 1e8, "stitch_bytes": 1e7, "resampled": False, "probabilities": False}
    fixed, small = predict_bytes(0, 0, **base), predict_bytes(10**6, 10**6, **base)
    assert predict_bytes(10**7, 10**7, **base) - fixed == pytest.approx(10 * (small - fixed))
    assert predict_bytes(10**6, 10**6, **{**base, "probabilities": True}) > small
    assert predict_bytes(10**6, 10**6, **{**base, "num_classes": 10, "resampled": True}) > small


def test_a_stitched_run_counts_its_blending_buffers_and_a_whole_pass_only_the_probabilities_it_keeps():
    model = UNet3D(num_classes=3, base_channels=4, depth=2)
    shape = (32, 32, 32)
    whole = plan_inference(model, shape, mode="whole", memory_budget_mb=10, **OPTIONS)
    kept = plan_inference(model, shape, mode="whole", memory_budget_mb=10, keep_probabilities=True, **OPTIONS)
    stitched = plan_inference(model, shape, mode="sliding", memory_budget_mb=10, keep_probabilities=True, **OPTIONS)
    options = {"input_voxels": 32**3, "prepared_shape": shape, "num_classes": 3, "resampled": False}
    plain = predict_peak_bytes(model, whole, probabilities=False, **options)
    with_probabilities = predict_peak_bytes(model, kept, probabilities=True, **options)
    blended = predict_peak_bytes(model, stitched, probabilities=True, **options)
    assert with_probabilities - plain == pytest.approx(0.85 * 4 * 3 * 32**3)  # no blending buffers for one pass
    window = stitched.window(shape)
    buffers = stitch_bytes(shape, window, 3)
    assert window == (8, 8, 8) and buffers == 4 * 4 * 8 * 32**2
    precision = whole.precision
    fewer_activations = whole_pass_bytes(model, window, precision, 4) - whole_pass_bytes(model, shape, precision, 4)
    assert blended - with_probabilities == pytest.approx(0.85 * (buffers + 0.75 * fewer_activations))


def test_on_a_gpu_the_host_holds_only_the_input_grid():
    model = UNet3D(num_classes=3, base_channels=4, depth=2)
    planned = plan_inference(model, (32,) * 3, mode="whole", memory_budget_mb=10, **OPTIONS)
    plan = replace(planned, device=torch.device("cuda"))  # planned on the CPU: no GPU is needed to estimate
    options = {"input_voxels": 10**6, "prepared_shape": (32,) * 3, "num_classes": 3, "resampled": True}
    assert predict_peak_bytes(model, plan, probabilities=False, **options) == pytest.approx(0.85 * 9 * 10**6)
    assert predict_peak_bytes(model, plan, probabilities=True, **options) == pytest.approx(0.85 * 21 * 10**6)
