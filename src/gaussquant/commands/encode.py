"""``gaussquant encode MODEL IMAGES --out TOKENS.npz``: parsing only; see :mod:`gaussquant.encode`.

``--out DIR`` (no ``.npz``) writes parts and ``index.json`` instead (:mod:`gaussquant.encode_parallel`),
the form that runs under ``torchrun --nproc-per-node N -m gaussquant encode ...`` and resumes.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a converted model: save_pretrained dir, checkpoint step dir or run dir")
    parser.add_argument("images", help="folder of images (recursive; jpg/png/webp/bmp)")
    parser.add_argument("--out", required=True,
                        help="tokens file to write (.npz), or a folder: parts of --shard-size images + index.json "
                        "(required under torchrun; resumes where a killed run stopped)")
    parser.add_argument("--shard-size", type=int, default=4096,
                        help="images per part when --out is a folder (a multiple of --batch-size)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="center-crop side in pixels (default: the model's training image_size)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--ema", action="store_true", help="use the EMA weights of a checkpoint")


def main(args: argparse.Namespace) -> int:
    import os

    from gaussquant.encode import encode_folder, load_model, resolve_device

    parts = not str(args.out).endswith(".npz")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if not parts:
            raise ValueError("under torchrun, --out must be a folder (each process writes parts there), not a .npz")
        if args.device == "auto":
            args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if _cuda() else "cpu"
    device = resolve_device(args.device)
    if parts:
        from gaussquant.encode_parallel import init_from_env

        init_from_env(device)
    model = load_model(args.model, device, use_ema=args.ema)
    if args.image_size is not None and args.image_size < 1:
        raise ValueError(f"--image-size must be a positive number of pixels; got {args.image_size}")
    image_size = args.image_size if args.image_size is not None else int(model.config.model.image_size)
    if parts:
        from gaussquant.encode_parallel import encode_folder_parts

        index = encode_folder_parts(model, args.images, args.out, image_size=image_size,
                                    batch_size=args.batch_size, shard_size=args.shard_size,
                                    num_workers=args.num_workers, progress=True)
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"tokens written to {index.parent} (index {index.name})")
        return 0
    path = encode_folder(model, args.images, args.out, image_size=image_size, batch_size=args.batch_size,
                         num_workers=args.num_workers, progress=True)
    print(f"tokens written to {path}")
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
