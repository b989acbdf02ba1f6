"""``gaussquant import-reference CKPT --config NAME --out DIR``: parsing only; see
:mod:`gaussquant.reference_checkpoint`."""

from __future__ import annotations

import argparse

# the keys of gaussquant.reference_checkpoint.REFERENCE_CONFIGS, listed here so that --help imports no torch
# (tests/test_import_reference.py checks that the two agree)
CONFIG_NAMES = ("sd3unet_gq_0.25", "sd3unet_gq_0.50", "sd3unet_gq_1.00",
                "bsqvit_gq_0.25", "bsqvit_gq_0.50", "bsqvit_gq_1.00")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="the reference's .ckpt file (PyTorch Lightning)")
    parser.add_argument("--config", required=True, choices=CONFIG_NAMES,
                        help="the reference config the checkpoint was trained with")
    parser.add_argument("--out", required=True, help="new directory for the imported GQ model")
    parser.add_argument("--skip-global", action="append", default=[], metavar="MODULE.NAME",
                        help="also accept this metadata class in the file, as an inert placeholder (repeatable)")


def main(args: argparse.Namespace) -> int:
    from gaussquant.reference_checkpoint import import_reference

    out = import_reference(args.checkpoint, args.config, args.out, skip_globals=args.skip_global)
    print(f"imported {args.checkpoint} ({args.config}) as a GQ VQ-VAE into {out}")
    return 0
