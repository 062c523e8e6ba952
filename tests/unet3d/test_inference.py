import numpy as np
import pytest
import torch
from torch import nn

from unet3d import UNet3D
from unet3d.device import cpu_copy, prepare_network, resolve_device
from unet3d.errors import InferenceError
from unet3d.inference import InferenceOutput, run_inference
from unet3d.planning import InferencePlan
from unet3d.windows import gaussian_weight, window_starts


class LogitIdentity(nn.Module):
    """One sigmoid output whose probability equals the input voxel: blending must return the input."""

    num_classes = 1
    pad_multiple = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logit(x.clamp(1e-6, 1 - 1e-6))


class Threshold(nn.Module):
    """Two classes: foreground where the input is above 0.5 (position-independent, so any tiling agrees)."""

    num_classes = 2
    pad_multiple = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([0.5 - x, x - 0.5], dim=1) * 20


def _infer(model, volume, plan, progress=None):
    """`run_inference` on a numpy volume, with its tensors back as numpy arrays for the checks."""
    out = run_inference(model, volume, plan, progress)
    assert out.labels.device == plan.device and out.labels.dtype == torch.uint8  # results stay where they ran
    probabilities = None if out.probabilities is None else out.probabilities.numpy()
    return InferenceOutput(out.labels.numpy(), probabilities, out.plan)  # type: ignore[arg-type]


def _plan(mode, patch=(8, 8, 8), overlap=0.5, **options):
    return InferencePlan(
        mode=mode,
        patch_size=patch,
        overlap=overlap,
        blending=options.pop("blending", "gaussian"),
        batch_size=options.pop("batch_size", 1),
        device=torch.device("cpu"),
        precision="fp32",
        pad_multiple=4,
        **options,
    )


@pytest.mark.parametrize("mode", ["whole", "sliding"])
@pytest.mark.parametrize("shape", [(20, 13, 9), (8, 8, 8), (5, 30, 7)])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.6])
def test_identity_network_through_the_sliding_window_returns_the_input(mode, shape, overlap):
    volume = np.random.default_rng(1).uniform(0.05, 0.95, shape).astype(np.float32)
    out = _infer(LogitIdentity(), volume, _plan(mode, overlap=overlap, keep_probabilities=True))
    assert out.probabilities is not None and out.probabilities.shape == (1, *shape)
    np.testing.assert_allclose(out.probabilities[0], volume, atol=1e-5)
    assert np.array_equal(out.labels, (volume >= 0.5).astype(np.uint8))


@pytest.mark.parametrize("batch_size", [1, 3])
def test_whole_and_sliding_agree_for_a_position_independent_network(batch_size):
    volume = np.random.default_rng(2).random((23, 17, 12)).astype(np.float32)
    whole = _infer(Threshold(), volume, _plan("whole")).labels
    sliding = _infer(Threshold(), volume, _plan("sliding", batch_size=batch_size, blending="constant")).labels
    assert np.array_equal(whole, sliding)
    assert np.array_equal(whole, (volume > 0.5).astype(np.uint8))


def test_a_volume_smaller_than_the_patch_gets_the_whole_pass_labels_from_the_sliding_window():
    # A real UNet (zero padding in every convolution, BatchNorm shifts) sees the border differently when the volume
    # is padded out to the patch: a window never extends past the padded volume, so one window equals a whole pass.
    torch.manual_seed(0)
    model = UNet3D(num_classes=3, base_channels=4, depth=2).eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm3d):
            module.running_mean.uniform_(-0.5, 0.5)
    volume = np.random.default_rng(4).random((12, 9, 14)).astype(np.float32)
    whole = _infer(model, volume, _plan("whole", keep_probabilities=True))
    sliding = _infer(model, volume, _plan("sliding", patch=(32, 32, 32), keep_probabilities=True))
    assert sliding.probabilities is not None and whole.probabilities is not None
    np.testing.assert_allclose(sliding.probabilities, whole.probabilities, atol=1e-5)
    assert np.array_equal(sliding.labels, whole.labels)


def test_tta_and_probabilities_sum_to_one():
    volume = np.random.default_rng(3).random((12, 12, 12)).astype(np.float32)
    out = _infer(Threshold(), volume, _plan("sliding", tta=True, keep_probabilities=True))
    assert out.probabilities is not None
    np.testing.assert_allclose(out.probabilities.sum(axis=0), 1.0, atol=1e-5)


def _asymmetric(shape):
    """A volume whose foreground (> 0.5) changes under a flip of any one axis: ramps of different slopes."""
    i, j, k = np.meshgrid(*(np.linspace(0, 1, n) for n in shape), indexing="ij")
    return ((i + 2 * j + 4 * k) / 7).astype(np.float32)


@pytest.mark.parametrize("mode", ["whole", "sliding"])
def test_tta_undoes_every_flip_so_a_pointwise_network_gives_the_plain_answer(mode):
    # Threshold commutes with flips; the volume does not: a flip left undone moves the foreground and the test fails.
    volume = _asymmetric((12, 16, 20))
    plain = _infer(Threshold(), volume, _plan(mode, keep_probabilities=True))
    tta = _infer(Threshold(), volume, _plan(mode, tta=True, keep_probabilities=True))
    assert plain.probabilities is not None and tta.probabilities is not None
    np.testing.assert_allclose(tta.probabilities, plain.probabilities, atol=1e-5)
    assert np.array_equal(tta.labels, (volume > 0.5).astype(np.uint8))
    for axis in range(3):  # each flip on its own would have moved the labels
        assert not np.array_equal(np.flip(tta.labels, axis), tta.labels)


def test_tta_is_the_average_of_the_four_flipped_passes_computed_by_hand():
    # A real UNet is not flip-invariant: its TTA answer must be the mean of un-flipped softmaxes, nothing else.
    torch.manual_seed(0)
    model = UNet3D(num_classes=3, base_channels=4, depth=2).eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm3d):
            module.running_mean.uniform_(-0.5, 0.5)
    volume = np.random.default_rng(6).random((12, 8, 16)).astype(np.float32)  # multiples of 4: no padding
    x = torch.from_numpy(volume)[None, None]
    with torch.no_grad():
        passes = [torch.flip(torch.softmax(model(torch.flip(x, d)), dim=1), d) for d in [(), (2,), (3,), (4,)]]
    expected = torch.stack(passes).mean(dim=0)[0].numpy()
    out = _infer(model, volume, _plan("whole", tta=True, keep_probabilities=True))
    assert out.probabilities is not None
    np.testing.assert_allclose(out.probabilities, expected, atol=1e-5)
    assert np.array_equal(out.labels, expected.argmax(axis=0))
    plain = _infer(model, volume, _plan("whole", keep_probabilities=True)).probabilities
    assert plain is not None and np.abs(plain - expected).max() > 1e-3  # so the flips do matter for this network


def test_threshold_applies_to_the_foreground_probability_of_binary_models():
    volume = np.full((8, 8, 8), 0.55, dtype=np.float32)  # p(foreground) = sigmoid(2) ≈ 0.88 after softmax
    low = _infer(Threshold(), volume, _plan("whole", threshold=0.5)).labels
    high = _infer(Threshold(), volume, _plan("whole", threshold=0.95)).labels
    assert low.all() and not high.any()


def test_progress_reports_increasing_fractions_up_to_one():
    seen = []
    volume = np.random.default_rng(4).random((16, 16, 16)).astype(np.float32)
    _infer(Threshold(), volume, _plan("sliding"), progress=lambda f, stage: seen.append((f, stage)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert {stage for _, stage in seen} == {"infer"}


@pytest.mark.parametrize("tta", [False, True])
def test_a_whole_pass_reports_progress_while_the_network_runs(tta):
    seen = []
    model = UNet3D(num_classes=3, base_channels=4, depth=2).eval()
    volume = np.random.default_rng(5).random((16, 16, 16)).astype(np.float32)
    _infer(model, volume, _plan("whole", tta=tta), progress=lambda f, stage: seen.append(f))
    # One pass (four with TTA), yet the fraction moves block by block instead of jumping from 0 to 1.
    assert len(seen) == (2 * model.depth + 1) * (4 if tta else 1)
    assert seen == sorted(seen) and 0 < seen[0] < 0.5 and seen[-1] == pytest.approx(1.0)


class RunsOutOfMemoryOnLargeInputs(Threshold):
    calls: list[tuple[int, ...]]

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit, self.calls = limit, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        if x[0, 0].numel() > self.limit:
            raise torch.OutOfMemoryError("injected: CUDA out of memory")
        return super().forward(x)


def test_out_of_memory_in_a_whole_pass_retries_with_a_sliding_window_and_same_mask():
    volume = np.random.default_rng(5).random((24, 24, 24)).astype(np.float32)
    reference = _infer(Threshold(), volume, _plan("whole")).labels
    model = RunsOutOfMemoryOnLargeInputs(limit=8**3)
    out = _infer(model, volume, _plan("whole"))
    assert out.plan.mode == "sliding"
    assert model.calls[0] == (1, 1, 24, 24, 24) and model.calls[-1] == (1, 1, 8, 8, 8)
    assert np.array_equal(out.labels, reference)


def test_out_of_memory_everywhere_is_a_clear_error():
    volume = np.random.default_rng(6).random((16, 16, 16)).astype(np.float32)
    with pytest.raises(InferenceError, match="out of memory even with a sliding window on the CPU"):
        _infer(RunsOutOfMemoryOnLargeInputs(limit=1), volume, _plan("whole"))


def test_window_starts_cover_the_axis_and_end_flush():
    assert window_starts(100, 32, 0.25) == [0, 24, 48, 68]
    assert window_starts(20, 32, 0.5) == [0]
    for size, patch, overlap in [(97, 16, 0.5), (129, 128, 0.25), (33, 8, 0.0)]:
        starts = window_starts(size, patch, overlap)
        covered = np.zeros(size, bool)
        for s in starts:
            covered[s : s + patch] = True
        assert covered.all() and starts[-1] + patch == size


def test_gaussian_weight_peaks_in_the_centre_and_stays_positive():
    weight = gaussian_weight((9, 9, 9))
    assert weight[4, 4, 4] == weight.max() == 1.0
    assert weight.min() > 0


def test_unavailable_device_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(InferenceError, match="no CUDA GPU is available"):
        resolve_device("cuda")
    with pytest.raises(InferenceError, match="device must be"):
        resolve_device("tpu")


def test_the_cpu_fallback_copy_leaves_the_shared_network_untouched():
    model = prepare_network(UNet3D(in_channels=1, num_classes=3, base_channels=4, depth=2), torch.device("cpu"))
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.inference_mode():  # where run_inference makes it
        copied = cpu_copy(model)
        assert torch.equal(copied(x), model(x))
    shared = {t.untyped_storage().data_ptr() for t in model.state_dict().values()}
    assert shared.isdisjoint(t.untyped_storage().data_ptr() for t in copied.state_dict().values())
    for parameter in copied.parameters():
        parameter.data.mul_(2)  # changing the copy...
    for key, value in model.state_dict().items():  # ...leaves the original as it was
        assert torch.equal(value, weights[key]), key
