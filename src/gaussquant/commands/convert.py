"""``gaussquant convert SOURCE -K K --out DIR``: parsing only; the work is :func:`gaussquant.convert.run`."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="a trained Gaussian VAE: run dir, checkpoint step dir or save dir")
    parser.add_argument("--codebook-size", "-K", type=int, required=True, help="K >= 2 (any integer)")
    parser.add_argument("--codebook-dim", "-d", type=int, default=None,
                        help="dimensions per group (default: the model's group size)")
    parser.add_argument("--rule", choices=("log_ratio", "nearest"), default="log_ratio")
    parser.add_argument("--beta", type=float, default=1.0, help="prior weight of the log_ratio rule")
    parser.add_argument("--seed", type=int, default=42, help="codebook seed")
    parser.add_argument("--codebook-method", choices=("sobol", "normal"), default="sobol")
    parser.add_argument("--grouping", choices=("contiguous", "strided"), default=None,
                        help="channel grouping (default: the model's)")
    parser.add_argument("--data", default=None, help="image folder for the report (default: held-out photos)")
    parser.add_argument("--num-images", type=int, default=64, help="images measured for the report")
    parser.add_argument("--image-size", type=int, default=None, help="default: the model's image_size")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--ema", action="store_true", help="convert the EMA weights of a checkpoint")
    parser.add_argument("--out", required=True, help="folder for the converted model")
    parser.add_argument("--overwrite", action="store_true", help="replace a model already in --out")


def main(args: argparse.Namespace) -> int:
    from gaussquant.convert import run

    out, report = run(
        args.source, args.out, codebook_size=args.codebook_size, codebook_dim=args.codebook_dim, rule=args.rule,
        beta=args.beta, seed=args.seed, codebook_method=args.codebook_method, grouping=args.grouping,
        data=args.data, num_images=args.num_images, image_size=args.image_size, batch_size=args.batch_size,
        device=args.device, use_ema=args.ema, overwrite=args.overwrite,
        on_report=lambda r: print(r.to_text(), flush=True),
    )
    print(f"converted model saved to {out} (bits per token {report.num_groups * report.log2_k:.3f})")
    return 0
