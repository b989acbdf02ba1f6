"""The ``gaussquant`` command: parsing only.

Every subcommand is a *command module* with two functions:

- ``add_arguments(parser)``: declares the subcommand's arguments on an ``argparse`` parser;
- ``main(args) -> int``: runs it, by calling a ``run(...)`` function that is also the Python API.

A command module imports nothing heavy at module level (no torch, numpy or workflow module: those are
imported inside ``main``). Every command module is imported to build the parser, so this is what keeps
``gaussquant --help`` and ``gaussquant NAME --help`` fast; ``tests/test_cli.py`` checks it for every entry
of :data:`COMMANDS`.

To add a subcommand:

1. write its command module next to the code it runs (``<step>/command.py`` for a step with its own folder,
   else ``commands/<name>.py``), with ``add_arguments`` and ``main`` as above;
2. add one line ``"name": ("one-line help", "gaussquant.module.path")`` to :data:`COMMANDS`, in workflow
   order (the order ``gaussquant --help`` lists them in);
3. add a test that runs it through :func:`main`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from gaussquant.optional import MissingOptionalDependency

# name -> (one-line help, command module with add_arguments/main); in workflow order
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train an autoencoder from a YAML config or preset (resumable, torchrun-ready)",
              "gaussquant.train.command"),
    "shards": ("pack an image folder into tar shards with an index (data.source: shards)",
               "gaussquant.data.command"),
    "convert": ("convert a Gaussian VAE to a GQ VQ-VAE (prints the convertibility report)",
                "gaussquant.commands.convert"),
    "import-reference": ("import a GQ reference .ckpt as a GQ VQ-VAE, running no code",
                         "gaussquant.commands.import_reference"),
    "encode": ("tokenize a folder of images into a tokens .npz, or a folder of parts (torchrun-ready)",
               "gaussquant.commands.encode"),
    "decode": ("decode a tokens .npz into PNG images", "gaussquant.commands.decode"),
    "eval": ("evaluate reconstructions: PSNR, SSIM, LPIPS, rFID, FD, codebook usage, report",
             "gaussquant.eval.command"),
    "prior": ("train (`prior train`) or score (`prior eval`) an autoregressive prior over a tokens file",
              "gaussquant.commands.prior"),
    "generate": ("sample images from a trained prior, decoded by the tokenizer it was trained for",
                 "gaussquant.commands.generate"),
    "demo": ("the main job: bundled TDC Gaussian VAE -> GQ at three K, whole-photo tokens, live TDC run, report",
             "gaussquant.demo.command"),
    "bench": ("run a benchmark (search, ...) and print its table", "gaussquant.bench.command"),
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
        importlib.import_module(module_name).add_arguments(p)
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
    try:
        return int(importlib.import_module(args._module).main(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError, TypeError,
            MissingOptionalDependency) as err:
        # Bad input ends with one clear sentence, not a traceback (use -v for the traceback).
        if args.verbose:
            raise
        print(f"gaussquant {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
