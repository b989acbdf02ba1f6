"""``gaussquant shards IMAGES --out DIR``: parsing only; see :mod:`gaussquant.data.shards`."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", help="an image folder (recursive), or an ImageNet-layout folder with train/ and val/")
    parser.add_argument("--out", required=True, help="the new shard folder (tar shards + index with SHA-256 "
                        "digests); train with --set data.source=shards --set data.path=DIR, where DIR may also be "
                        "the folder's http(s):// URL or pipe:COMMAND with {} for each file name")
    parser.add_argument("--shard-size", type=int, default=10000, help="images per tar shard")


def main(args: argparse.Namespace) -> int:
    from gaussquant.data.shards import shard_splits, write_shards

    index = write_shards(args.images, args.out, shard_size=args.shard_size)
    counts = ", ".join(f"{split}: {n}" for split, n in shard_splits(index.parent).items())
    print(f"shards written to {index.parent} ({counts})")
    return 0
