"""``gaussquant prior train|eval``: parsing only; see :mod:`gaussquant.prior.train` and
:mod:`gaussquant.prior.evaluate`."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="prior_command", metavar="ACTION", required=True)
    train = sub.add_parser("train", help="train an autoregressive prior on a tokens file (resumable)",
                           description="Train a causal transformer prior on the tokens `gaussquant encode` wrote. "
                           "Rerunning with the same --out resumes from its newest checkpoint. Under "
                           "`torchrun --nproc-per-node N` it trains with DistributedDataParallel (each rank its slice of every global batch; "
                           "rank 0 writes the checkpoints).")
    train.add_argument("tokens", help="tokens file written by `gaussquant encode` (.npz)")
    train.add_argument("--out", required=True, help="run folder for the prior's checkpoints")
    train.add_argument("--preset", choices=["tiny", "small"], default="tiny", help="model size (default tiny)")
    train.add_argument("--steps", type=int, default=2000, help="total optimiser steps (default 2000)")
    train.add_argument("--batch-size", type=int, default=64, help="images per step (per rank under torchrun)")
    train.add_argument("--lr", type=float, default=None, help="peak learning rate (default 1e-3 tiny, 6e-4 small)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--tokenizer", default=None,
                       help="the model that encoded the tokens; stored (after a fingerprint check) so that "
                       "`gaussquant generate` can decode without being told")
    train.add_argument("--class-from-folders", action="store_true",
                       help="condition on each image's first folder (IMAGES/CLASS/file.png) as its class")
    train.add_argument("--checkpoint-every", type=int, default=250)
    train.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, ...")
    evaluate = sub.add_parser("eval", help="held-out NLL of a prior in bits per token and bits per pixel",
                              description="Score every image of a held-out tokens file under a trained prior.")
    evaluate.add_argument("prior", help="the prior's run folder (or one of its checkpoint step folders)")
    evaluate.add_argument("tokens", help="held-out tokens from the same tokenizer (.npz)")
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, ...")
    evaluate.add_argument("--json", default=None, help="also write the numbers to this JSON file")


def main(args: argparse.Namespace) -> int:
    from gaussquant.encode import resolve_device

    device = resolve_device(args.device)
    if args.prior_command == "train":
        from gaussquant.prior.train import train_prior

        from gaussquant.distributed import rank_and_world
        from gaussquant.train.distributed import cleanup

        try:
            final = train_prior(args.tokens, args.out, preset=args.preset, steps=args.steps,
                                batch_size=args.batch_size, lr=args.lr, seed=args.seed, tokenizer=args.tokenizer,
                                class_from_folders=args.class_from_folders, checkpoint_every=args.checkpoint_every,
                                device=device, progress=True)
            if rank_and_world()[0] == 0:
                print(f"prior checkpoint written to {final}")
        finally:
            cleanup()  # the torchrun process group, if there is one
        return 0
    import json

    from gaussquant.prior.evaluate import evaluate_prior
    from gaussquant.prior.store import load_prior

    result = evaluate_prior(load_prior(args.prior, map_location=device), args.tokens, batch_size=args.batch_size)
    print(f"held-out NLL: {result['bits_per_token']:.4f} bits per token ({result['bits_per_index']:.4f} per index), "
          f"{result['bits_per_pixel']:.5f} bits per pixel; rate {result['rate_bits_per_token']:.2f} bits per token, "
          f"NLL / rate = {result['fraction_of_rate']:.3f}")
    print(f"({result['protocol']})")
    if args.json:
        from pathlib import Path

        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0
