"""``gaussquant bench NAME``: run one of the packaged benchmarks and print its table."""

from __future__ import annotations

import argparse
import importlib

# benchmark name -> module with add_arguments(parser) and main(args)
BENCHMARKS: dict[str, str] = {
    "models": "gaussquant.bench.models",
    "quality": "gaussquant.bench.quality",
    "theory": "gaussquant.bench.theory",
    "conversion": "gaussquant.bench.conversion",
    "spread": "gaussquant.bench.spread",
    "search": "gaussquant.bench.search",
    "train": "gaussquant.bench.train",
    "tdc-convergence": "gaussquant.bench.tdc_convergence",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", metavar="NAME", required=True)
    for name, module_name in BENCHMARKS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        p.set_defaults(_bench_module=module_name)
        module.add_arguments(p)


def main(args: argparse.Namespace) -> int:
    return int(importlib.import_module(args._bench_module).main(args) or 0)
