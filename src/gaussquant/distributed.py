"""The one home of "is ``torch.distributed`` ready?" and of this process's rank and world size.

A leaf module (it imports only torch) so that every layer may use it: quantizers all-reduce their
statistics, metrics merge their sums and the trainer synchronises ranks only once a default process group
exists (``torchrun`` with ``init_process_group``); a plain ``python`` run has none and all of these are
no-ops. Process-group setup itself lives in ``gaussquant.train.distributed``.
"""

from __future__ import annotations

import torch.distributed as dist

__all__ = ["barrier", "distributed_ready", "rank_and_world"]


def distributed_ready() -> bool:
    """True when torch.distributed is built in and a default process group has been initialised."""
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` without a process group."""
    if distributed_ready():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    """Wait for every rank (a no-op without a process group)."""
    if distributed_ready():
        dist.barrier()
