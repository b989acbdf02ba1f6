"""``gaussquant bench NAME [ARGS]``: run one of the packaged benchmarks and print its table.

``gaussquant bench --help`` lists the benchmarks from :data:`BENCHMARKS` without importing any of them
(they import torch); ``gaussquant bench NAME --help`` shows that benchmark's own arguments. To add a
benchmark, write a module with ``add_arguments(parser)`` and ``main(args)`` and add one line here.
"""

from __future__ import annotations

import argparse
import importlib

# benchmark name -> (one-line help, module with add_arguments(parser) and main(args))
BENCHMARKS: dict[str, tuple[str, str]] = {
    "models": ("forward+backward throughput and peak memory of the CPU-sized model presets",
               "gaussquant.bench.models"),
    "quality": ("rate-matched quality: GQ against VQ, FSQ, LFQ, BSQ and TokenBridge at equal bits per token",
                "gaussquant.bench.quality"),
    "theory": ("theorem check: Monte-Carlo large-error probability against log K - KL and both bounds",
               "gaussquant.bench.theory"),
    "conversion": ("conversion claims on one trained TDC Gaussian VAE (the paper's ablations)",
                   "gaussquant.bench.conversion"),
    "spread": ("TDC vs a vanilla KL weight: the spread of KL over groups and dimensions",
               "gaussquant.bench.spread"),
    "search": ("codebook search speed and memory: gq_search vs the plain broadcast and one GEMM + argmax",
               "gaussquant.bench.search"),
    "generation": ("the same autoregressive prior on each tokenizer's tokens at equal rate: held-out NLL, FD/KID",
                   "gaussquant.bench.generation"),
    "train": ("training throughput and peak memory of tiny presets, one process and under torchrun",
              "gaussquant.bench.train"),
    "demo-gap": ("the GQ conversion gap of demo-sized models on the whole held-out photos, in the demo's windows",
                 "gaussquant.bench.demo_gap"),
    "tdc-convergence": ("TDC convergence: in-band fraction, KL max and aggregate posterior over steps, "
                        "reference vs adaptive controller", "gaussquant.bench.tdc_convergence"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    width = max(map(len, BENCHMARKS))
    parser.epilog = "benchmarks:\n" + "\n".join(
        f"  {name:<{width}}  {help_text}" for name, (help_text, _) in BENCHMARKS.items()
    ) + "\n\n`gaussquant bench NAME --help` shows a benchmark's own arguments."
    parser.add_argument("benchmark", choices=list(BENCHMARKS), metavar="NAME",
                        help=f"the benchmark to run: {', '.join(BENCHMARKS)}")
    parser.add_argument("bench_args", nargs=argparse.REMAINDER, metavar="ARGS",
                        help="the benchmark's own arguments")


def main(args: argparse.Namespace) -> int:
    help_text, module_name = BENCHMARKS[args.benchmark]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"gaussquant bench {args.benchmark}", description=help_text)
    module.add_arguments(parser)
    return int(module.main(parser.parse_args(args.bench_args)) or 0)
