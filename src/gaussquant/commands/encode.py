"""``gaussquant encode MODEL IMAGES --out TOKENS.npz``: parsing only; see :mod:`gaussquant.encode`.

``--out DIR`` (no ``.npz``) writes parts and ``index.json`` instead (:mod:`gaussquant.encode_parallel`),
the form that runs under ``torchrun --nproc-per-node N -m gaussquant encode ...`` and resumes.
"""

from __future__ import annotations

import argparse

TILE_HELP = (
    "run the encoder in overlapping windows of SIZE pixels (a multiple of the model's downsampling factor) "
    "and cross-fade them; the token grid is still the whole image's. Keeps the normalisation statistics of a "
    "model trained on small crops (docs/demo_model.md). 'none': one pass over the whole image. Default: the "
    "model's recommended tile (config.json model.tile; the unet-demo-gq presets set 64), else one pass"
)


def tile_size(value: str) -> int:
    """``--tile`` values: a window side in pixels, or ``none`` / ``0`` for one pass (returned as 0)."""
    if value.strip().lower() in ("none", "0"):
        return 0
    try:
        size = int(value)
    except ValueError:
        size = -1
    if size < 1:
        raise argparse.ArgumentTypeError(f"--tile takes a window side in pixels (e.g. 64) or 'none'; got {value!r}")
    return size


def add_tile_arguments(parser: argparse.ArgumentParser, help_text: str = TILE_HELP) -> None:
    """``--tile SIZE|none`` and ``--tile-margin PX`` (shared by encode and decode)."""
    parser.add_argument("--tile", type=tile_size, default=None, metavar="SIZE|none", help=help_text)
    parser.add_argument("--tile-margin", type=int, default=None, metavar="PX",
                        help="pixels each window overlaps its neighbour on each side, cross-faded (default: an "
                             "eighth of SIZE rounded down to a multiple of the downsampling factor: 8 for 64)")


def tiling_of(args: argparse.Namespace, model):  # -> Tiling | None | "auto"
    """The ``tiling`` argument of ``encode_folder`` / ``decode_tokens`` from ``--tile`` / ``--tile-margin``."""
    from gaussquant.tiling import AUTO, make_tiling

    if args.tile is None:
        if args.tile_margin is not None:
            raise ValueError("--tile-margin needs --tile SIZE (the window it is a margin of)")
        return AUTO
    return make_tiling(args.tile, args.tile_margin, int(model.downsample_factor))


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
    add_tile_arguments(parser)


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
    tiling = tiling_of(args, model)
    if parts:
        from gaussquant.encode_parallel import encode_folder_parts

        index = encode_folder_parts(model, args.images, args.out, image_size=image_size,
                                    batch_size=args.batch_size, shard_size=args.shard_size,
                                    num_workers=args.num_workers, tiling=tiling, progress=True)
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"tokens written to {index.parent} (index {index.name})")
        return 0
    path = encode_folder(model, args.images, args.out, image_size=image_size, batch_size=args.batch_size,
                         num_workers=args.num_workers, tiling=tiling, progress=True)
    print(f"tokens written to {path}")
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
