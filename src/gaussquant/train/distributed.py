"""Process-group helpers for ``torchrun`` (DDP with NCCL on GPU, gloo on CPU).

``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; a plain ``python`` run has
none of them and trains in one process with no process group. Statistics that must agree across ranks (TDC)
are all-reduced by the RateController itself once a group exists.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from gaussquant.distributed import barrier, distributed_ready

__all__ = ["DistInfo", "setup", "cleanup", "barrier", "all_reduce_mean_"]


@dataclass
class DistInfo:
    """``rank`` / ``world_size`` / ``local_rank`` of this process and its ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> DistInfo:
    """Initialise the process group when launched by torchrun (idempotent) and pick the device.

    ``device``: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
    """
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but CUDA is not available; use --set device=cpu")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not distributed_ready():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if distributed_ready():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def cleanup() -> None:
    """Destroy the process group if one exists."""
    if distributed_ready():
        dist.destroy_process_group()




def all_reduce_mean_(tensors: list[torch.Tensor]) -> None:
    """In-place mean over ranks (no-op without a process group)."""
    if not distributed_ready() or not tensors:
        return
    world = dist.get_world_size()
    for t in tensors:
        dist.all_reduce(t)
        t.div_(world)
