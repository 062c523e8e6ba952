"""Devices: choosing one, the autocast precision it runs best in, and a network prepared for it."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import InferenceError
from .model import UNet3D, fuse_for_inference
from .options import ResolvedPrecision

__all__ = ["cpu_has_bf16", "default_precision", "resolve_device", "synchronize"]


def resolve_device(device: str | int | torch.device) -> torch.device:
    """`"auto"` → the first CUDA device if there is one, else CPU; validates explicit choices (an int N is cuda:N)."""
    if isinstance(device, torch.device):
        return device
    if isinstance(device, int) and not isinstance(device, bool):
        return resolve_device(f"cuda:{device}")
    if not isinstance(device, str):
        raise InferenceError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InferenceError(f"device {device!r} was requested but no CUDA GPU is available: use 'cpu' or 'auto'")
        parsed = torch.device(device)
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise InferenceError(f"device {device!r} does not exist: {torch.cuda.device_count()} GPU(s) visible")
        return parsed
    raise InferenceError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def prepare_network(model: nn.Module, device: torch.device) -> nn.Module:
    """An eval copy for inference: BatchNorm folded, on `device`, channels-last on CPU.

    oneDNN runs the narrow full-resolution 3D convolutions about 1.9× faster in channels-last
    (measured in bench/); on CUDA the default layout is faster (notes/perf-measured.md).
    """
    network = fuse_for_inference(model) if isinstance(model, UNet3D) else model.eval()
    return move_network(network, device)


def cpu_copy(network: nn.Module) -> nn.Module:
    """A copy of `network` on the CPU, for one request, leaving the (shared) original where it is.

    The weights go straight to the CPU: a plain deepcopy would first duplicate them on the network's own device,
    which is the device that has just run out of memory.
    """
    memo: dict[int, Any] = {}
    with torch.inference_mode(False):
        for tensor in itertools.chain(network.parameters(), network.buffers()):
            moved = tensor.detach().to("cpu", copy=True)
            memo[id(tensor)] = nn.Parameter(moved, requires_grad=False) if isinstance(tensor, nn.Parameter) else moved
        return move_network(copy.deepcopy(network, memo), torch.device("cpu"))


def move_network(network: nn.Module, device: torch.device) -> nn.Module:
    # Module.to(memory_format=...) is supported at run time but missing from torch's type stubs.
    return network.to(device=device, memory_format=memory_format_for(device))  # type: ignore[call-overload]


def memory_format_for(device: torch.device) -> torch.memory_format:
    return torch.channels_last_3d if device.type == "cpu" else torch.contiguous_format


def default_precision(device: torch.device) -> ResolvedPrecision:
    """bf16 on CPUs with native bf16 (measured faster, masks agree ≥ 99.5%; see bench/), fp16 on CUDA."""
    if device.type == "cuda":
        return "fp16"
    if device.type == "cpu" and torch.backends.mkldnn.is_available() and cpu_has_bf16():
        return "bf16"
    return "fp32"


def cpu_has_bf16() -> bool:
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


def stage(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host array as a tensor ready to be copied to `device`: the array itself (shared) for the CPU; for a GPU,
    a copy in pinned memory, whose copy to the device runs asynchronously and at full bus speed.

    Staging can run on a reader thread (`Segmenter.predict_many`), ahead of the device's own work.
    """
    tensor = torch.from_numpy(array)
    if device.type != "cuda":
        return tensor
    order = sorted(range(tensor.ndim), key=lambda axis: -tensor.stride()[axis])  # memory order: a contiguous view
    inverse = sorted(range(tensor.ndim), key=lambda axis: order[axis])
    return tensor.permute(order).pin_memory().permute(inverse)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`tensor` on `device` (asynchronously from pinned memory); strides are kept, so an F-ordered volume stays one."""
    return tensor.to(device, non_blocking=tensor.is_pinned())


def to_host(tensor: torch.Tensor) -> np.ndarray:
    """A C-contiguous numpy copy of `tensor` (through pinned memory from a GPU), ready to use when it returns."""
    if tensor.device.type == "cpu":
        return tensor.contiguous().numpy()
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    host.copy_(tensor, non_blocking=True)
    torch.cuda.current_stream(tensor.device).synchronize()
    return host.numpy()


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on `device` (a GPU runs asynchronously): stage timings then mean what they say."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
