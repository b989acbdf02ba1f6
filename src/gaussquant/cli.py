"""The ``gaussquant`` command: parsing only.

Each subcommand lives in the room it belongs to, as a module with ``add_arguments(parser)`` and
``main(args) -> int``; the module is imported only when its subcommand runs, so ``--help`` stays fast.
Every ``main`` calls a ``run(...)`` function that is also the Python API.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# name -> (one-line help, module holding add_arguments/main)
COMMANDS: dict[str, tuple[str, str]] = {
    "bench": ("run a benchmark (search, ...) and print its table", "gaussquant.bench.command"),
    "convert": ("convert a Gaussian VAE to a GQ VQ-VAE (prints the convertibility report)", "gaussquant.convert"),
    "encode": ("tokenize a folder of images into a tokens .npz", "gaussquant.encode"),
    "demo": ("the main job: bundled TDC Gaussian VAE -> GQ at three K, whole-photo tokens, live TDC run, report",
             "gaussquant.demo"),
    "decode": ("decode a tokens .npz into PNG images", "gaussquant.decode"),
    "eval": ("evaluate reconstructions: PSNR, SSIM, LPIPS, rFID, FD, codebook usage, report", "gaussquant.eval.command"),
    "train": ("train an autoencoder from a YAML config or preset (resumable, torchrun-ready)", "gaussquant.train.command"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gaussquant",
        description="Gaussian Quant image tokenizers: train a Gaussian VAE with TDC, convert it to a "
        "VQ-VAE without training, tokenize, evaluate and benchmark.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, module_name) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module_name)
        module = importlib.import_module(module_name)
        module.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(args._module)
    try:
        return int(module.main(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError, TypeError) as err:
        # Bad input ends with one clear sentence, not a traceback (use -v for the traceback).
        if args.verbose:
            raise
        print(f"gaussquant {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
