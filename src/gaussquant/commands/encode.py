"""``gaussquant encode MODEL IMAGES --out TOKENS.npz``: parsing only; see :mod:`gaussquant.encode`."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a converted model: save_pretrained dir, checkpoint step dir or run dir")
    parser.add_argument("images", help="folder of images (recursive; jpg/png/webp/bmp)")
    parser.add_argument("--out", required=True, help="tokens file to write (.npz)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="center-crop side in pixels (default: the model's training image_size)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--ema", action="store_true", help="use the EMA weights of a checkpoint")


def main(args: argparse.Namespace) -> int:
    from gaussquant.encode import encode_folder, load_model, resolve_device

    device = resolve_device(args.device)
    model = load_model(args.model, device, use_ema=args.ema)
    if args.image_size is not None and args.image_size < 1:
        raise ValueError(f"--image-size must be a positive number of pixels; got {args.image_size}")
    image_size = args.image_size if args.image_size is not None else int(model.config.model.image_size)
    path = encode_folder(model, args.images, args.out, image_size=image_size, batch_size=args.batch_size,
                         num_workers=args.num_workers, progress=True)
    print(f"tokens written to {path}")
    return 0
