"""A deterministic, rank-sharded sampler that resumes at the exact next sample, and the loader builder.

Issue 5 ("Data": "a deterministic sampler that resumes where it stopped"; "Checkpoints": sampler
position saved). Epoch ``e``'s order is a permutation drawn from a local generator seeded by
``(seed, e)``, so it depends on nothing else. The global order is padded (by wrapping around) or
truncated (``drop_last``) to a multiple of ``world_size`` and rank ``r`` takes items ``r, r + W, ...``
(the DistributedSampler convention), so every rank has the same number of batches.

Grouped order (``groups``, e.g. the images per shard of a remote shard folder, ``shards.py``): the groups are
permuted, then cut into windows of ``window`` consecutive groups, and the items of each window are permuted
together; still one permutation of all items per epoch, drawn from ``(seed, e)`` alone, so ranks stay disjoint
and resume stays exact, but only about ``window`` groups (shards) are in use at a time.

The state ``(epoch, position)`` counts the samples this rank has *handed out*; when a
:class:`~torch.utils.data.DataLoader` prefetches, the trainer must save the position of what it has
*consumed*: pass ``consumed=`` (samples used by optimiser steps of this rank in this epoch) to
:meth:`ResumableSampler.state_dict`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from gaussquant.data.transforms import item_generator


class ResumableSampler(Sampler[int]):
    """Per-epoch permutation (or identity), sharded per rank, resumable mid-epoch.

    Args:
        dataset_len: number of items in the dataset.
        seed: permutation seed.
        shuffle: permute each epoch (``False``: 0, 1, 2, ... in order, e.g. for evaluation).
        rank, world_size: this process' shard.
        drop_last: drop the tail so that all ranks get distinct items (``True``), or pad by wrapping
            around so no item is skipped (``False``; a few items are seen twice per epoch).
        groups: sizes of consecutive index blocks (sum ``dataset_len``) to shuffle by (module docstring);
            None: one permutation of all items.
        window: groups mixed together when ``groups`` is given (>= 1).
    """

    def __init__(
        self,
        dataset_len: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        groups: Sequence[int] | None = None,
        window: int = 4,
    ) -> None:
        if dataset_len < 1:
            raise ValueError(f"dataset_len must be >= 1, got {dataset_len}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if drop_last and dataset_len < world_size:
            raise ValueError(f"drop_last with {dataset_len} items leaves nothing for {world_size} ranks")
        self.dataset_len, self.seed, self.shuffle = int(dataset_len), int(seed), bool(shuffle)
        self.rank, self.world_size, self.drop_last = int(rank), int(world_size), bool(drop_last)
        if groups is not None and (sum(groups) != dataset_len or min(groups) < 1 or window < 1):
            raise ValueError(f"groups must be positive sizes summing to {dataset_len} and window >= 1; "
                             f"got {len(groups)} groups summing to {sum(groups)}, window {window}")
        self.groups = None if groups is None else [int(g) for g in groups]
        self.window = int(window) if groups is not None else 0  # 0: ungrouped (saved with the state)
        self.epoch = 0
        self.position = 0

    @property
    def num_samples(self) -> int:
        """Items this rank gets per epoch."""
        if self.drop_last:
            return self.dataset_len // self.world_size
        return math.ceil(self.dataset_len / self.world_size)

    def __len__(self) -> int:
        return self.num_samples - self.position

    def epoch_indices(self, epoch: int) -> list[int]:
        """All indices this rank sees in ``epoch``, in order."""
        if self.shuffle and self.groups is not None:
            order = self._grouped_order(item_generator(self.seed, epoch))
        elif self.shuffle:
            order = torch.randperm(self.dataset_len, generator=item_generator(self.seed, epoch)).tolist()
        else:
            order = list(range(self.dataset_len))
        total = self.num_samples * self.world_size
        if total > len(order):
            order = (order * math.ceil(total / len(order)))[:total]
        return order[:total][self.rank :: self.world_size]

    def _grouped_order(self, generator: torch.Generator) -> list[int]:
        assert self.groups is not None
        starts = [0]
        for size in self.groups[:-1]:
            starts.append(starts[-1] + size)
        shuffled = torch.randperm(len(self.groups), generator=generator).tolist()
        order: list[int] = []
        for w in range(0, len(shuffled), self.window):
            window = shuffled[w : w + self.window]
            members = torch.cat([torch.arange(starts[g], starts[g] + self.groups[g]) for g in window])
            order += members[torch.randperm(len(members), generator=generator)].tolist()
        return order

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its beginning (no-op on the position when it is the current epoch)."""
        if int(epoch) != self.epoch:
            self.epoch, self.position = int(epoch), 0

    def __iter__(self) -> Iterator[int]:
        indices = self.epoch_indices(self.epoch)
        while self.position < len(indices):
            index = indices[self.position]
            self.position += 1
            yield index
        # epoch finished: the next iteration starts the next epoch
        self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self, consumed: int | None = None) -> dict[str, int]:
        """``{"epoch", "position", "seed", "dataset_len", "world_size", "window"}``; ``consumed`` overrides
        position (``window`` is 0 for an ungrouped order)."""
        position = self.position if consumed is None else int(consumed)
        return {
            "epoch": self.epoch,
            "position": position,
            "seed": self.seed,
            "dataset_len": self.dataset_len,
            "world_size": self.world_size,
            "window": self.window,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue at ``(epoch, position)``; a different seed, length, world size or window is an error."""
        for key in ("seed", "dataset_len", "world_size", "window"):
            if key in state and int(state[key]) != getattr(self, key):
                hint = ("the same data, seed and number of processes" if key != "window" else
                        "the same data.shard_window, and shards from where they were (a local folder's order "
                        "is not grouped by shard, a URL's or pipe's is)")
                raise ValueError(
                    f"sampler state has {key}={state[key]} but this sampler has {getattr(self, key)}; "
                    f"resume with {hint}"
                )
        position = int(state["position"])
        if not 0 <= position <= self.num_samples:
            raise ValueError(f"sampler position {position} outside [0, {self.num_samples}]")
        self.epoch, self.position = int(state["epoch"]), position


def _seed_worker(worker_id: int) -> None:
    # why: numpy/random are not used by our datasets (they use per-item torch generators), but
    # third-party transforms might; derive their seeds from torch's per-worker seed, never from time.
    import random

    import numpy as np

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class EpochTagged(Sampler[tuple[int, int]]):
    """Yields ``(epoch, index)`` for each index of a :class:`ResumableSampler`, reading the epoch as it
    goes (in the main process), so datasets whose items depend on the epoch (random crops) stay right
    with persistent workers, which never see a ``dataset.set_epoch`` made after they started."""

    def __init__(self, sampler: ResumableSampler) -> None:
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self.sampler:
            yield self.sampler.epoch, index


def default_num_workers() -> int:
    """Loader workers per process for file-decoding datasets: the CPUs this process may use, shared by
    the ``LOCAL_WORLD_SIZE`` processes of this machine (set by torchrun), less one for the training
    loop, at most 8; at least 1 in a single process, else at least 0."""
    import os

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1 if local == 1 else 0, min(8, cpus // local - 1))


def make_loader(
    dataset: Dataset,
    sampler: Sampler[int],
    batch_size: int,
    num_workers: int | None = 0,
    *,
    seed: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
    persistent_workers: bool = True,
) -> DataLoader:
    """A DataLoader over ``sampler`` with deterministic worker seeding.

    Worker ``w`` gets torch seed ``base + w`` where ``base`` comes from a local generator seeded with
    ``seed`` (DataLoader's own scheme, made reproducible), and numpy/random seeded from it.
    ``num_workers=None`` chooses: :func:`default_num_workers` for datasets that decode files
    (``dataset.reads_files``), 0 for in-memory ones. Workers persist across epochs (``persistent_workers``):
    a dataset with ``takes_epoch`` gets ``(epoch, index)`` pairs from a :class:`ResumableSampler`
    (:class:`EpochTagged`) so its epoch-dependent items stay right. ``pin_memory``: for a CUDA device.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers is None:
        num_workers = default_num_workers() if getattr(dataset, "reads_files", False) else 0
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    if getattr(dataset, "takes_epoch", False) and isinstance(sampler, ResumableSampler):
        sampler = EpochTagged(sampler)  # type: ignore[assignment]
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=pin_memory,
        worker_init_fn=_seed_worker if num_workers > 0 else None,
        generator=torch.Generator().manual_seed(int(seed)),
        persistent_workers=persistent_workers and num_workers > 0,
    )
