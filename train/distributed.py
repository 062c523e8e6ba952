"""torchrun integration: rank and world size from the environment, gloo on CPU, NCCL on GPU."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


class Distributed:
    """Rank/world info from torchrun's environment; a single process when it is absent."""

    def __init__(self, device: torch.device) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.active = self.world > 1
        if self.active and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def broadcast_flag(self, flag: bool, device: torch.device) -> bool:
        if not self.active:
            return flag
        tensor = torch.tensor([int(flag)], device=device)
        dist.broadcast(tensor, src=0)
        return bool(tensor.item())

    def gather(self, tensor: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
        """Every rank's copy of a same-shaped tensor, in rank order (on the CPU)."""
        if not self.active:
            return [tensor.cpu()]
        local = tensor.to(device)
        gathered = [torch.empty_like(local) for _ in range(self.world)]
        dist.all_gather(gathered, local)
        return [t.cpu() for t in gathered]

    def close(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()
