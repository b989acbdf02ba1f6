"""Training throughput (images/s) and peak memory of tiny presets, in one process and under torchrun (gloo).

Each measurement runs in fresh processes (so peak RSS is the run's own): ``warmup`` optimiser steps, then
``steps`` timed steps of the real trainer (no logging, images or checkpoints inside the timed window).
Images/s counts the global batch (all ranks). Peak memory: max RSS per process (CPU) and peak CUDA
allocation. The machine's load average is printed with the table, since shared machines skew throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_PRESETS = ("unet-tiny-gq", "vit-tiny-gq")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--presets", nargs="+", default=list(DEFAULT_PRESETS), help="training presets to time")
    parser.add_argument("--nproc", nargs="+", type=int, default=[1, 2], help="process counts (gloo on CPU)")
    parser.add_argument("--steps", type=int, default=20, help="timed optimiser steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=8, help="images per process per step")
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP_NUM_THREADS per process (default: 1 when nproc > 1, else unset)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config overrides for every run")


def _worker(preset: str, steps: int, warmup: int, batch: int, out: Path, overrides: list[str]) -> None:
    import torch
    import torch.distributed as dist

    from gaussquant.distributed import distributed_ready
    from gaussquant.train.config import load_config
    from gaussquant.train.trainer import Trainer

    cfg = load_config(preset, [f"batch_size={batch}", f"steps={steps + warmup}", f"out={out / 'run'}",
                               "data.num_workers=0", *overrides])
    trainer = Trainer(cfg)
    for _ in range(warmup):
        trainer.train_step()
    if distributed_ready():
        dist.barrier()
    t0 = time.perf_counter()
    for _ in range(steps):
        logs = trainer.train_step()
    float(logs["loss"])  # wait for the device
    if distributed_ready():
        dist.barrier()
    seconds = time.perf_counter() - t0
    rank, world = trainer.info.rank, trainer.info.world_size
    cuda = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    result = {"rank": rank, "world": world, "seconds": seconds,
              "img_per_s": batch * world * steps / seconds,
              "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "cuda_peak_mb": cuda,
              "kl_mean": float(logs["kl_mean"]) if "kl_mean" in logs else None}
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    if distributed_ready():
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(preset: str, nproc: int, *, steps: int, warmup: int, batch: int, threads: int | None,
            overrides: list[str]) -> dict:
    """Run one measurement in fresh processes; returns rank 0's numbers plus the max RSS over ranks."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        threads = threads if threads is not None else (1 if nproc > 1 else None)
        if threads is not None:
            env["OMP_NUM_THREADS"] = str(threads)
        launcher = [] if nproc == 1 else [
            "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", "--master-addr=127.0.0.1",
            f"--master-port={_free_port()}"]
        cmd = [sys.executable, *launcher, "-m", "gaussquant.bench.train", "--worker", preset, str(steps),
               str(warmup), str(batch), tmp, *overrides]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"benchmark worker failed for {preset} x{nproc}:\n{r.stderr[-3000:]}")
        ranks = [json.loads((Path(tmp) / f"rank{i}.json").read_text()) for i in range(nproc)]
    out = dict(ranks[0])
    out["max_rss_mb"] = max(r["max_rss_mb"] for r in ranks)
    out.update(preset=preset, nproc=nproc, batch=batch, threads=threads or "default")
    return out


def main(args: argparse.Namespace) -> int:
    load = os.getloadavg()
    rows = [measure(p, n, steps=args.steps, warmup=args.warmup, batch=args.batch_size, threads=args.threads,
                    overrides=args.overrides) for p in args.presets for n in args.nproc]
    load_after = os.getloadavg()
    print(f"training throughput: {args.steps} timed steps after {args.warmup} warm-up, "
          f"batch {args.batch_size} per process, {os.cpu_count()} CPUs")
    print(f"load average before {load[0]:.2f} / after {load_after[0]:.2f} (1 min)")
    print("| preset | processes | threads/proc | global batch | img/s | peak RSS/proc (MiB) | peak CUDA (MiB) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        cuda = "-" if r["cuda_peak_mb"] is None else f"{r['cuda_peak_mb']:.0f}"
        print(f"| {r['preset']} | {r['nproc']} | {r['threads']} | {r['batch'] * r['nproc']} | "
              f"{r['img_per_s']:.1f} | {r['max_rss_mb']:.0f} | {cuda} |")
    return 0


if __name__ == "__main__":  # the worker entry point (under torchrun for nproc > 1)
    if len(sys.argv) >= 7 and sys.argv[1] == "--worker":
        _worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), Path(sys.argv[6]),
                sys.argv[7:])
    else:
        raise SystemExit("use `gaussquant bench train` (this module's __main__ is the worker entry)")
