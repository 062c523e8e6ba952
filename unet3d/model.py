"""UNet3D: the seed's encoder-decoder family, loadable from safetensors through the Hugging Face Hub mixin."""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import partial
from typing import cast

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .options import NORMS, Norm, check_choice


def _norm_layer(norm: str, channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm3d(channels)
    if norm == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    return nn.Identity()


class ConvBlock(nn.Sequential):
    """Two (conv 3³ → norm → ReLU) layers, with optional dropout between them."""

    def __init__(self, in_channels: int, out_channels: int, norm: str, dropout: float) -> None:
        bias = norm == "none"
        super().__init__(
            nn.Conv3d(in_channels, out_channels, 3, padding=1, bias=bias),
            _norm_layer(norm, out_channels),
            nn.ReLU(inplace=True),
            nn.Dropout3d(dropout) if dropout > 0 else nn.Identity(),
            nn.Conv3d(out_channels, out_channels, 3, padding=1, bias=bias),
            _norm_layer(norm, out_channels),
            nn.ReLU(inplace=True),
        )


class UNet3D(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="unet3d",
    tags=["unet3d", "medical-imaging", "image-segmentation", "3d"],
    license="mit",
):
    """A 3D U-Net: `depth` max-pool levels, transposed-conv up-sampling, skip concatenation, 1×1×1 head.

    Input `(B, in_channels, I, J, K)` with every spatial size a multiple of `2**depth`; output logits
    `(B, num_classes, I, J, K)`. With `base_channels=16, depth=4` the widths are 16, 32, 64, 128 and a
    256-channel bottleneck (16·base), as in the seed.

    Args:
        in_channels: image channels (1 for a single MR/CT volume).
        num_classes: output channels; class 0 is background. 1 means a single sigmoid output.
        base_channels: width of the first level; each level doubles it.
        depth: number of down-sampling steps (the pad multiple is `2**depth`).
        norm: "batch" (eval statistics independent of the field of view), "instance" or "none".
        dropout: Dropout3d probability inside each block, in [0, 1).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 3,
        base_channels: int = 16,
        depth: int = 4,
        norm: Norm = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _validate_arguments(in_channels, num_classes, base_channels, depth, norm, dropout)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.base_channels = base_channels
        self.depth = depth
        self.norm = norm
        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.encoders = nn.ModuleList()
        previous = in_channels
        for width in widths[:-1]:
            self.encoders.append(ConvBlock(previous, width, norm, dropout))
            previous = width
        self.pool = nn.MaxPool3d(2)
        self.bottleneck = ConvBlock(widths[-2], widths[-1], norm, dropout)
        self.upsamplers = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.upsamplers.append(nn.ConvTranspose3d(width * 2, width, kernel_size=2, stride=2))
            self.decoders.append(ConvBlock(width * 2, width, norm, dropout))
        self.head = nn.Conv3d(base_channels, num_classes, kernel_size=1)
        self._init_weights()

    @property
    def pad_multiple(self) -> int:
        """Every spatial input size must be a multiple of this."""
        return int(2**self.depth)

    def forward(
        self, x: torch.Tensor, progress: Callable[[float], None] | None = None, *, slab_rows: int | None = None
    ) -> torch.Tensor:
        """Logits for `x`; `progress`, if given, is called with the share of the pass's compute done after each
        block (a whole-volume pass is one call, so this is what moves a progress bar during it).

        With `slab_rows` (even), the last decoder block and the head run in slabs of that many rows along the first
        spatial axis, each with the two rows either side its two 3³ convolutions reach: the same logits (up to
        float summation order), but the widest activations of the pass (the 2·base-channel concatenation at full
        resolution and what follows it) never exist whole, which cuts a whole pass's peak memory by a third on a
        CPU (bench/results/compare-cpu*.json).
        """
        shares = iter(self.block_shares()) if progress is not None else None
        done = 0.0

        def block_done() -> None:
            nonlocal done
            if progress is not None and shares is not None:
                done += next(shares)
                progress(min(done, 1.0))

        slabbed = slab_rows is not None and 0 < slab_rows < x.shape[2]
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            block_done()
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        block_done()
        for level, (upsample, decoder) in enumerate(zip(self.upsamplers, self.decoders, strict=True)):
            skip = skips.pop()  # each skip is freed as soon as it is concatenated (the full-resolution one is large)
            if slabbed and level == len(self.decoders) - 1:
                top = partial(_top_rows, upsample, decoder, self.head, x, skip)
                logits = _in_slabs(top, skip.shape[2], slab_rows)
                block_done()
                return logits
            x = decoder(torch.cat([upsample(x), skip], dim=1))
            del skip
            block_done()
        return self.head(x)

    def block_shares(self) -> list[float]:
        """Each block's share of a forward pass's convolution work, in the order `forward` runs them (sum 1).

        A 3³ convolution costs in·out channels per output voxel; each level has 1/8 of the voxels of the one above.
        """
        widths = [self.base_channels * 2**level for level in range(self.depth + 1)]
        inputs = [self.in_channels, *widths[:-2]]
        encoders = [
            (c_in * w + w * w) / 8**level for level, (c_in, w) in enumerate(zip(inputs, widths[:-1], strict=True))
        ]
        bottleneck = (widths[-2] * widths[-1] + widths[-1] ** 2) / 8**self.depth
        decoders = [(2 * w * w + w * w) / 8**level for level, w in reversed(list(enumerate(widths[:-1])))]
        costs = [*encoders, bottleneck, *decoders]
        return [cost / sum(costs) for cost in costs]

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv3d | nn.ConvTranspose3d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)


def _top_rows(
    upsample: nn.Module, decoder: nn.Module, head: nn.Module, below: torch.Tensor, skip: torch.Tensor, lo: int, hi: int
) -> torch.Tensor:
    """Logits of full-resolution rows `[lo, hi)` (even): the up-sampling (kernel 2, stride 2) makes row r from row
    r // 2 of the level below."""
    joined = torch.cat([upsample(below[:, :, lo // 2 : hi // 2]), skip[:, :, lo:hi]], dim=1)
    return cast(torch.Tensor, head(decoder(joined)))


def _in_slabs(block: Callable[[int, int], torch.Tensor], size: int, rows: int | None) -> torch.Tensor:
    """`block(lo, hi)` (a full-resolution step on rows `[lo, hi)`, two 3³ convolutions deep) over each slab of
    `rows` rows plus a 2-row halo, kept without the halo: rows computed from a cut edge's zero padding are dropped,
    rows at the volume's own edges keep theirs, as in one pass."""
    step = int(rows or size)
    out: torch.Tensor | None = None
    for start in range(0, size, step):
        stop = min(size, start + step)
        lo, hi = max(0, start - _HALO), min(size, stop + _HALO)
        piece = block(lo, hi)[:, :, start - lo : stop - lo]
        if out is None:
            layout = torch.channels_last_3d if piece.is_contiguous(memory_format=torch.channels_last_3d) else None
            shape = (piece.shape[0], piece.shape[1], size, *piece.shape[3:])
            out = torch.empty(
                shape, dtype=piece.dtype, device=piece.device, memory_format=layout or torch.contiguous_format
            )
        out[:, :, start:stop] = piece
    assert out is not None  # size >= 1
    return out


_HALO = 2  # rows either side that two 3³ convolutions (padding 1) reach


def _validate_arguments(
    in_channels: int, num_classes: int, base_channels: int, depth: int, norm: str, dropout: float
) -> None:
    for name, value in (("in_channels", in_channels), ("num_classes", num_classes), ("base_channels", base_channels)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not isinstance(depth, int) or not 1 <= depth <= 6:
        raise ValueError(f"depth must be an integer in [1, 6], got {depth!r}")
    check_choice(norm, NORMS, "norm")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")


def fuse_for_inference(model: UNet3D) -> UNet3D:
    """Return an eval-mode copy with each BatchNorm folded into the convolution before it.

    The folded network computes the same function (up to float rounding) with one memory pass
    less per layer; models with instance or no normalisation are returned as an eval copy.
    """
    fused = copy.deepcopy(model).eval()
    if model.norm != "batch":
        return fused
    for block in fused.modules():
        if isinstance(block, ConvBlock):
            for index in (0, 4):
                conv, norm = cast(nn.Conv3d, block[index]), cast(nn.BatchNorm3d, block[index + 1])
                block[index] = fuse_conv_bn_eval(conv, norm)
                block[index + 1] = nn.Identity()
    return fused
