"""The base of every streaming metric: named running sums, merged by addition.

A metric keeps only sums (float64 for values, int64 for counts), never per-sample features, so it
streams over any number of images, and two partial metrics merge exactly by adding their sums. Under
``torch.distributed`` the same addition is an ``all_reduce(SUM)`` of each sum tensor, which is why
multi-process evaluation gives the numbers of one process (up to float64 summation order).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from gaussquant.distributed import distributed_ready


class StreamingSums:
    """Named running sums; subclasses register them with :meth:`add_sum` and fill them in ``update``."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self._sums: dict[str, Tensor] = {}

    def add_sum(self, name: str, shape: tuple[int, ...] = (), dtype: torch.dtype = torch.float64) -> Tensor:
        """Register a zero-initialised running sum and return it."""
        self._sums[name] = torch.zeros(shape, dtype=dtype, device=self.device)
        return self._sums[name]

    def sum(self, name: str) -> Tensor:
        return self._sums[name]

    def accumulate(self, name: str, value: Tensor) -> None:
        """Add ``value`` (cast to the sum's dtype and device) to sum ``name``."""
        target = self._sums[name]
        target += value.detach().to(device=target.device, dtype=target.dtype)

    def reset(self) -> None:
        for tensor in self._sums.values():
            tensor.zero_()

    def merge(self, other: "StreamingSums") -> None:
        """Add another instance's sums (e.g. from another shard of the data) into this one."""
        if type(other) is not type(self) or other._sums.keys() != self._sums.keys():
            raise TypeError(f"cannot merge {type(other).__name__} into {type(self).__name__}")
        for name, tensor in self._sums.items():
            if other._sums[name].shape != tensor.shape:
                raise ValueError(f"cannot merge {name!r}: shapes {other._sums[name].shape} vs {tensor.shape}")
            tensor += other._sums[name].to(tensor.device)

    def all_reduce(self) -> None:
        """Sum every running sum over all ranks (no-op without an initialised process group).

        Every rank must call it (collective). Sums travel on the metric's device: a CUDA device for
        NCCL, the CPU for gloo.
        """
        if not distributed_ready():
            return
        for tensor in self._sums.values():
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)

    def state_dict(self) -> dict[str, Tensor]:
        return {name: tensor.clone() for name, tensor in self._sums.items()}
