"""``gaussquant generate PRIOR --num N --out DIR``: parsing only; see :mod:`gaussquant.prior.generate`."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prior", help="a prior's run folder (from `gaussquant prior train`) or a checkpoint step folder")
    parser.add_argument("--num", type=int, required=True, help="number of images to generate")
    parser.add_argument("--out", required=True, help="folder for the PNGs and the sampled tokens.npz")
    parser.add_argument("--temperature", type=float, default=1.0, help="> 0; below 1 sharpens (default 1)")
    parser.add_argument("--top-k", type=int, default=None, help="sample among the k most likely indices per group")
    parser.add_argument("--seed", type=int, default=0, help="same seed, prior and batch size: same images")
    parser.add_argument("--class", dest="class_name", default=None,
                        help="class folder name to draw (class-conditional priors; default: cycle through all)")
    parser.add_argument("--tokenizer", default=None,
                        help="the model that encoded the prior's tokens (default: the one stored in the prior); "
                        "its fingerprint is checked")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, ...")


def main(args: argparse.Namespace) -> int:
    from gaussquant.encode import resolve_device
    from gaussquant.prior.generate import generate_images

    paths = generate_images(args.prior, args.num, args.out, temperature=args.temperature, top_k=args.top_k,
                            seed=args.seed, tokenizer=args.tokenizer, class_name=args.class_name,
                            batch_size=args.batch_size, device=resolve_device(args.device), progress=True)
    print(f"generated {len(paths)} images in {args.out}")
    return 0
