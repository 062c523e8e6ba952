"""Real CUDA out-of-memory during inference: the Segmenter slides, or moves to the CPU, and gives the same mask.

Needs a CUDA device (skipped without one). The CPU-only suite injects the same exception instead
(tests/unet3d/test_inference.py, tests/api/test_faults.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from unet3d import Segmenter, UNet3D
from unet3d.card import load_card
from unet3d.hub import load_unet, resolve_source

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture
def exact_cuda() -> Iterator[None]:
    """Deterministic cuDNN without TF32, so that two runs of the same windows give the same bits."""
    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = (
        True,
        False,
        False,
    )
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved


def test_a_real_cuda_out_of_memory_in_a_whole_pass_slides_to_the_same_mask(tiny_model_dir: Path, exact_cuda) -> None:
    segmenter = Segmenter.from_pretrained(tiny_model_dir, device="cuda", precision="fp32")
    volume = np.random.default_rng(0).normal(100, 30, (192, 192, 160)).astype(np.float32)
    expected = segmenter.predict(volume, mode="sliding")
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    _, total = torch.cuda.mem_get_info()
    # Room for the weights and a few 16³ windows; one whole pass needs ~100 MiB per activation map.
    cap = torch.cuda.memory_allocated() + 48 * 2**20
    torch.cuda.set_per_process_memory_fraction(cap / total)
    try:
        with pytest.raises(torch.OutOfMemoryError):  # the control: a whole pass really does not fit
            segmenter.network(torch.zeros((1, 1, 192, 192, 160), device="cuda"))
        torch.cuda.empty_cache()
        fallen_back = segmenter.predict(volume, mode="whole")
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert (fallen_back.mode, fallen_back.device) == ("sliding", "cuda")
    assert np.array_equal(fallen_back.mask, expected.mask)


class OutOfMemoryOnCuda(UNet3D):
    """The tiny UNet3D, refusing every forward pass on the GPU while `refuse` is set."""

    refuse = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.refuse and x.is_cuda:
            raise torch.OutOfMemoryError("CUDA out of memory (injected on every GPU pass)")
        return super().forward(x)


def test_out_of_memory_on_every_gpu_plan_finishes_on_a_cpu_copy_and_the_network_stays_on_the_gpu(
    tiny_model_dir: Path, exact_cuda
) -> None:
    source = resolve_source(tiny_model_dir)
    regular = load_unet(source)
    model = OutOfMemoryOnCuda(**{k: getattr(regular, k) for k in ("in_channels", "num_classes", "base_channels",
                                                                  "depth", "norm")})  # fmt: skip
    model.load_state_dict(regular.state_dict(), strict=True)
    card = load_card(tiny_model_dir / "model.yaml")
    on_gpu = Segmenter(model, card, source, device="cuda")
    on_cpu = Segmenter(regular, card, source, device="cpu")
    volume = np.random.default_rng(1).normal(100, 30, (48, 40, 32)).astype(np.float32)

    fallen_back = on_gpu.predict(volume, mode="whole")
    assert (fallen_back.mode, fallen_back.device) == ("sliding", "cpu")
    assert np.array_equal(fallen_back.mask, on_cpu.predict(volume, mode="sliding").mask)
    assert next(on_gpu.network.parameters()).is_cuda, "the shared network was moved to the CPU"

    on_gpu.network.refuse = False  # memory is back: the next volume runs on the GPU again
    again = on_gpu.predict(volume, mode="whole")
    assert (again.mode, again.device) == ("whole", "cuda")
