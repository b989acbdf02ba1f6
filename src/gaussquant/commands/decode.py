"""``gaussquant decode MODEL TOKENS.npz --out DIR``: parsing only; see :mod:`gaussquant.decode`."""

from __future__ import annotations

import argparse

from gaussquant.commands.encode import add_tile_arguments, tiling_of

TILE_HELP = (
    "run the decoder in overlapping windows of SIZE pixels, cross-faded; 'none': one pass over the whole "
    "image. Default: the windows the token file records (those `gaussquant encode` used), else the model's "
    "recommended tile (config.json model.tile; the unet-demo-gq presets set 64), else one pass"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="the model that encoded the tokens (save dir, checkpoint or run dir)")
    parser.add_argument("tokens", help="tokens file written by `gaussquant encode` (.npz)")
    parser.add_argument("--out", required=True, help="folder for the decoded PNGs")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, ...")
    parser.add_argument("--ema", action="store_true", help="use the EMA weights of a checkpoint")
    add_tile_arguments(parser, TILE_HELP)


def main(args: argparse.Namespace) -> int:
    from gaussquant.decode import decode_tokens
    from gaussquant.encode import load_model, resolve_device

    model = load_model(args.model, resolve_device(args.device), use_ema=args.ema)
    paths = decode_tokens(model, args.tokens, args.out, batch_size=args.batch_size, tiling=tiling_of(args, model),
                          progress=True)
    print(f"decoded {len(paths)} images to {args.out}")
    return 0
