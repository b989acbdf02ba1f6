"""Start-up time of a folder data source: what the trainer does before its first step (docs/benchmarks.md).

    python benchmarks/folder_startup.py DIR --make 200000   # write DIR/train (N tiny PNGs) + DIR/val (N/20)
    python benchmarks/folder_startup.py DIR                 # time build_dataset + the 8 preview images
    python benchmarks/folder_startup.py DIR --throughput 200  # then images/s through the training loader

Times, in this process (each rank under torchrun): building the train and eval datasets of ``data.source: folder`` (listing,
checks, cache) and decoding the 8 preview images the trainer takes from the eval split. Run it twice: the
second run reads the file-list cache written by the first. ``--set KEY=VALUE`` sets DataConfig fields
(``--set source=shards`` with ROOT a folder written by ``gaussquant shards``, or its ``http(s)://`` URL or
``pipe:COMMAND``, then also ``--set shard_cache=DIR``).

Under ``torchrun --nproc-per-node N`` every rank does the same (gloo process group; folder lists are built
by rank 0 and broadcast, as in training; the loader takes this rank's share of the sampler) and rank 0
prints the slowest rank's start-up and the images/s of all ranks together.
"""

from __future__ import annotations

import argparse
import io
import os
import time

import numpy as np
from PIL import Image


def make_folder(root: str, count: int, per_class: int = 1000) -> None:
    """ImageNet layout: ``root/train/nXXXXXXXX/img_XXXXX.png`` (``count`` files) and ``root/val`` (count/20),
    24x32 RGB noise PNGs (64 distinct contents written over and over: the files, not the pixels, matter)."""
    rng = np.random.default_rng(0)
    blobs = []
    for _ in range(64):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(buffer, "PNG")
        blobs.append(buffer.getvalue())
    for split, total in (("train", count), ("val", max(1, count // 20))):
        for start in range(0, total, per_class):
            folder = os.path.join(root, split, f"n{start // per_class:08d}")
            os.makedirs(folder, exist_ok=True)
            for j in range(start, min(total, start + per_class)):
                with open(os.path.join(folder, f"img_{j - start:05d}.png"), "wb") as f:
                    f.write(blobs[j % 64])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root")
    parser.add_argument("--make", type=int, metavar="N", help="first write N training images under ROOT")
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--throughput", type=int, default=0, metavar="BATCHES",
                        help="also time this many batches through the trainer's DataLoader (shuffled, "
                             "automatic workers) and print images/s")
    parser.add_argument("--batch-size", type=int, default=8, help="batch size for --throughput (tiny presets: 8)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    if args.make:
        t0 = time.perf_counter()
        make_folder(args.root, args.make)
        print(f"wrote {args.make} + {max(1, args.make // 20)} images in {time.perf_counter() - t0:.1f} s")
    import torch

    from gaussquant.data.config import DataConfig, build_dataset

    fields = {}
    for item in args.sets:
        key, value = item.split("=", 1)
        fields[key] = int(value) if value.isdigit() else {"true": True, "false": False}.get(value.lower(), value)
    config = DataConfig(**{"source": "folder", "path": args.root, "image_size": args.image_size, **fields})
    rank, world = _init_distributed()
    t0 = time.perf_counter()
    train, evaluation = build_dataset(config)
    t1 = time.perf_counter()
    preview = torch.stack([evaluation[i] for i in range(min(8, len(evaluation)))])
    t2 = time.perf_counter()
    slowest = _max_over_ranks(t2 - t0)
    if rank == 0:
        print(f"train {len(train)} files, eval {len(evaluation)} files, preview {tuple(preview.shape)}")
        print(f"datasets {t1 - t0:.2f} s + preview {t2 - t1:.2f} s = start-up {t2 - t0:.2f} s"
              + (f" (rank 0; slowest of {world} ranks: {slowest:.2f} s)" if world > 1 else ""))
    if args.throughput:
        loader_throughput(train, args.batch_size, args.throughput, rank=rank, world=world,
                          window=config.shard_window)


def _init_distributed() -> tuple[int, int]:
    """``(rank, world_size)``: a gloo process group under torchrun, else ``(0, 1)``."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    import torch.distributed as dist

    dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size()


def _max_over_ranks(value: float) -> float:
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return float(tensor)


def loader_throughput(dataset, batch_size: int, batches: int, *, rank: int = 0, world: int = 1,
                      window: int = 4) -> float:
    """Images/s through ``make_loader`` as the trainer builds it (shuffled :class:`ResumableSampler` with
    this rank's share, grouped by shard for remote shards, automatic ``num_workers``), timed after the first
    batch (worker start-up excluded, and printed); with several ranks, the sum over ranks of images over the
    slowest rank's time."""
    from gaussquant.data.sampler import ResumableSampler, default_num_workers, make_loader

    workers = default_num_workers() if getattr(dataset, "reads_files", False) else 0
    sampler = ResumableSampler(len(dataset), seed=0, rank=rank, world_size=world, drop_last=True,
                               groups=getattr(dataset, "sample_groups", None), window=window)
    loader = make_loader(dataset, sampler, batch_size, None, drop_last=True)
    t0 = time.perf_counter()
    it = iter(loader)
    next(it)
    t1 = time.perf_counter()
    seen = 0
    for _ in range(batches):
        seen += len(next(it))
    elapsed = _max_over_ranks(time.perf_counter() - t1)
    first = _max_over_ranks(t1 - t0)
    rate = seen * world / elapsed
    if rank == 0:
        print(f"loader: {world} rank(s) x {workers} worker(s), batch {batch_size}: first batch {first:.2f} s, "
              f"then {rate:.1f} images/s (all ranks) over {batches} batches per rank")
    return rate


if __name__ == "__main__":
    main()
