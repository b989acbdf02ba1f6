"""Forward+backward throughput (images/s) and peak memory of the CPU-sized model presets.

Each preset runs in a fresh spawned process so that its peak resident memory is its own: on Linux the
peak is ``VmHWM`` of ``/proc/self/status`` (the high-water mark of the process' own address space), not
``ru_maxrss``, which a spawned child inherits from its parent (the kernel carries the pre-exec peak over),
so a large parent would hide the child's steps; elsewhere ``ru_maxrss``.
The bottleneck is a pass-through (encoder and decoder cost only; a bottleneck adds little). Timings
depend on the machine's load: the table records the load average next to the numbers.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import torch
from torch import Tensor

from gaussquant.models.presets import ModelConfig, build_autoencoder
from gaussquant.quantizers.base import Bottleneck, BottleneckOutput

DEFAULT_PRESETS = ("unet-tiny", "vit-tiny", "unet-small", "vit-small")


class _PassThrough(Bottleneck):
    """A continuous bottleneck that returns its input (benchmarks only)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.in_channels = self.latent_channels = channels

    def forward(self, h: Tensor) -> BottleneckOutput:
        return BottleneckOutput(z_hat=h)


@dataclass
class ModelBenchRow:
    arch: str
    image_size: int
    batch_size: int
    threads: int
    params_m: float
    images_per_s: float
    ms_per_step: float
    peak_rss_mib: float
    step_peak_mib: float  # peak RSS growth during the timed steps, over the RSS after building the model


def _maxrss_mib() -> float:
    """Peak resident set of this process in MiB (see the module docstring)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    # ru_maxrss is in KiB on Linux, bytes on macOS
    scale = 1.0 if sys.platform == "darwin" else 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _measure(arch: str, image_size: int, batch_size: int, steps: int, seed: int, threads: int | None) -> ModelBenchRow:
    if threads is not None:  # this is a fresh worker process: the setting affects only it
        torch.set_num_threads(threads)
    torch.manual_seed(seed)  # fresh process: the global RNG only seeds the weight init here
    cfg = ModelConfig(arch=arch, image_size=image_size)
    model = build_autoencoder(cfg, _PassThrough(cfg.z_channels)).train()
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch_size, 3, image_size, image_size, generator=gen) * 2 - 1

    def step() -> None:
        model.zero_grad(set_to_none=True)
        (model(x).x_hat - x).abs().mean().backward()

    base = _maxrss_mib()
    step()  # warm-up (allocator, kernel selection)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    elapsed = time.perf_counter() - start
    return ModelBenchRow(
        arch=arch,
        image_size=image_size,
        batch_size=batch_size,
        threads=torch.get_num_threads(),
        params_m=sum(p.numel() for p in model.parameters()) / 1e6,
        images_per_s=batch_size * steps / elapsed,
        ms_per_step=1000 * elapsed / steps,
        peak_rss_mib=_maxrss_mib(),
        step_peak_mib=_maxrss_mib() - base,
    )


def run(
    presets: tuple[str, ...] = DEFAULT_PRESETS,
    image_size: int = 64,
    batch_size: int = 8,
    steps: int = 3,
    seed: int = 0,
    threads: int | None = None,
) -> list[ModelBenchRow]:
    """Measure every preset in its own spawned process; returns one row per preset."""
    ctx = mp.get_context("spawn")
    rows = []
    for arch in presets:
        # one fresh worker per preset; an exception in the worker is re-raised here by result()
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            rows.append(pool.submit(_measure, arch, image_size, batch_size, steps, seed, threads).result())
    return rows


def format_table(rows: list[ModelBenchRow]) -> str:
    """A markdown table of the rows plus the machine and load average it was measured under."""
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    lines = [
        f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"load average (1, 5, 15 min) after the run: {load}",
        "",
        "| arch | image | batch | threads | params (M) | fwd+bwd images/s | ms/step | peak RSS (MiB) | step peak (MiB) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r.arch} | {r.image_size} | {r.batch_size} | {r.threads} | {r.params_m:.2f} | {r.images_per_s:.1f} | "
            f"{r.ms_per_step:.0f} | {r.peak_rss_mib:.0f} | {r.step_peak_mib:.0f} |"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--presets", nargs="+", default=list(DEFAULT_PRESETS), help="arch presets to measure")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed forward+backward steps after one warm-up")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads in the workers (default: torch's)"
    )


def main(args: argparse.Namespace) -> int:
    rows = run(tuple(args.presets), args.image_size, args.batch_size, args.steps, args.seed, args.threads)
    sys.stdout.write(format_table(rows) + "\n")
    return 0
