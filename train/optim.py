"""Loss, learning-rate schedule and mixed precision for the training loop."""

from __future__ import annotations

import math

import torch
from torch.nn import functional

from unet3d.device import default_precision

from .config import TrainConfig


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """Cross-entropy plus soft Dice over the foreground classes (batch Dice, as nnU-Net)."""
    logits = logits.float()
    ce = functional.cross_entropy(logits, target)
    probs = torch.softmax(logits, dim=1)[:, 1:]
    onehot = functional.one_hot(target, logits.shape[1]).permute(0, 4, 1, 2, 3)[:, 1:].float()
    dims = (0, 2, 3, 4)
    intersection = (probs * onehot).sum(dims)
    soft_dice = (2 * intersection + 1e-5) / (probs.sum(dims) + onehot.sum(dims) + 1e-5)
    return config.optim.ce_weight * ce + config.optim.dice_weight * (1 - soft_dice.mean())


def learning_rate_factor(step: int, total: int, config: TrainConfig, elapsed_fraction: float = 0.0) -> float:
    """Warm-up, then cosine/poly decay over the steps — or over the time limit, whichever runs out first."""
    warmup = config.optim.warmup_steps
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, max((step - warmup) / max(1, total - warmup), elapsed_fraction))
    if config.optim.schedule == "poly":
        return (1 - progress) ** 0.9
    return 0.5 * (1 + math.cos(math.pi * progress))


def amp_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CPUs with native bf16 and on CUDA (no loss scaling needed); fp16 only on request."""
    choice = config.optim.amp
    if choice == "off":
        return None
    if choice == "fp16":
        return torch.float16
    if choice == "bf16" or device.type == "cuda":
        return torch.bfloat16
    return torch.bfloat16 if default_precision(device) == "bf16" else None
