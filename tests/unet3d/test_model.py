import re

import pytest
import torch

from unet3d import UNet3D
from unet3d.model import fuse_for_inference


def test_forward_keeps_spatial_shape_and_returns_one_channel_per_class():
    model = UNet3D(num_classes=3, base_channels=4, depth=2).eval()
    with torch.inference_mode():
        out = model(torch.rand(2, 1, 16, 12, 8))
    assert out.shape == (2, 3, 16, 12, 8)
    assert model.pad_multiple == 4


def test_default_architecture_matches_the_seed_family():
    model = UNet3D()
    widths = [block[0].out_channels for block in model.encoders]
    assert widths == [16, 32, 64, 128]
    assert model.bottleneck[0].out_channels == 256
    assert isinstance(model.upsamplers[0], torch.nn.ConvTranspose3d)
    assert model.head.kernel_size == (1, 1, 1)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"norm": "group"}, "norm must be one of batch, instance, none, got 'group'"),
        ({"dropout": 1.0}, "dropout must be in [0, 1), got 1.0"),
        ({"depth": 0}, "depth must be an integer in [1, 6], got 0"),
        ({"num_classes": 0}, "num_classes must be a positive integer, got 0"),
    ],
)
def test_invalid_arguments_name_the_value(arguments, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        UNet3D(**arguments)


@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
def test_save_pretrained_then_from_pretrained_gives_identical_outputs(tmp_path, norm):
    torch.manual_seed(0)
    model = UNet3D(num_classes=2, base_channels=4, depth=2, norm=norm, dropout=0.1).eval()
    model.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"config.json", "model.safetensors"}
    loaded = UNet3D.from_pretrained(tmp_path, strict=True).eval()
    x = torch.rand(1, 1, 8, 8, 8)
    with torch.inference_mode():
        assert torch.equal(model(x), loaded(x))
    assert loaded.norm == norm


def test_folding_batchnorm_keeps_the_function():
    torch.manual_seed(1)
    model = UNet3D(num_classes=3, base_channels=4, depth=2)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm3d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.2, 2)
            module.weight.data.uniform_(0.5, 1.5)
    model.eval()
    fused = fuse_for_inference(model)
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in fused.modules())
    x = torch.rand(1, 1, 12, 12, 12)
    with torch.inference_mode():
        torch.testing.assert_close(fused(x), model(x), atol=1e-4, rtol=1e-4)


def test_a_forward_pass_reports_its_progress_block_by_block():
    model = UNet3D(num_classes=3, base_channels=4, depth=2).eval()
    x = torch.rand(1, 1, 16, 16, 8)
    seen: list[float] = []
    with torch.inference_mode():
        reported = model(x, progress=seen.append)
        plain = model(x)
    assert torch.equal(reported, plain)
    assert len(seen) == 2 * model.depth + 1  # encoders, bottleneck, decoders
    assert seen == sorted(seen) and seen[0] > 0 and seen[-1] == pytest.approx(1.0)
    shares = model.block_shares()
    # The full-resolution decoder does the most work: 2w·w + w·w channel products on every voxel.
    assert max(shares) == shares[-1] and sum(shares) == pytest.approx(1.0)


@pytest.mark.parametrize("rows", [2, 6, 10, 38])
def test_a_pass_with_its_top_decoder_in_slabs_gives_the_same_logits(rows):
    # The halo must cover what both 3³ convolutions reach and the up-sampling must take the right rows of the level
    # below: a slab edge off by one row changes the logits there.
    torch.manual_seed(0)
    model = UNet3D(num_classes=3, base_channels=4, depth=2).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm3d):
            module.running_mean.uniform_(-0.5, 0.5)
    x = torch.randn(1, 1, 40, 24, 20)
    seen: list[float] = []
    with torch.inference_mode():
        whole = model(x)
        slabbed = model(x, progress=seen.append, slab_rows=rows)
    torch.testing.assert_close(slabbed, whole, rtol=0, atol=1e-5)
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0) and len(seen) == 2 * model.depth + 1
