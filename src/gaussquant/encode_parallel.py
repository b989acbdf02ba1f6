"""Pre-tokenize a dataset in parallel: ``torchrun --nproc-per-node N -m gaussquant encode MODEL DATA --out DIR``.

The sorted file list (built once by rank 0 and broadcast, see ``data/file_list.py``) is cut into **parts**
of ``shard_size`` consecutive images; part ``p`` is written by rank ``p mod N`` as an ordinary tokens
``.npz`` (``tokens.py``) named ``part-PPPPPP.npz``. The parts depend on the images and ``shard_size`` only,
not on the number of processes. When every part is written, rank 0 writes ``index.json``:

    {"format": "gaussquant-token-parts", "version": 1, "num_images": N, "shard_size": S,
     "model_fingerprint": ..., "codebook_size": K, "image_size": [H, W],
     "parts": [{"file": "part-000000.npz", "start": 0, "count": S}, ...]}

**Resume**: a part that exists is kept when it holds exactly its planned file names and was written by
this model (same fingerprint); any other existing part is an error naming it (a different model or
folder: choose another ``--out``). A part interrupted while being written exists only as ``.partial`` and
is written again. So a killed run restarts where it stopped, with any number of processes.

**Same tokens as one process**: each image is encoded on its own by the same model; batches start at the
part boundaries, so with ``shard_size`` a multiple of ``batch_size`` the batches are the single-process ones.
``load_token_parts`` (``tokens.py``; also ``load_tokens(DIR)``) reads the folder back as one tokens file.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from gaussquant.distributed import barrier, rank_and_world
from gaussquant.quantizers.base import require_discrete
from gaussquant.tiling import AUTO, Tiling, resolve_tiling, tiled_tokenize, tiling_record
from gaussquant.tokens import PARTS_FORMAT, PARTS_INDEX, TokenWriter, model_fingerprint

log = logging.getLogger(__name__)


def part_name(part: int) -> str:
    return f"part-{part:06d}.npz"


def init_from_env(device: torch.device) -> None:
    """Join the process group torchrun describes (WORLD_SIZE > 1): NCCL on CUDA, gloo on CPU."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def _part_is_done(path: Path, names: list[str], fingerprint: str) -> bool:
    """True when ``path`` holds exactly ``names`` from this model; False when it does not exist."""
    if not path.exists():
        return False
    try:
        with np.load(path, allow_pickle=False) as data:
            stored = [str(n) for n in data["file_names"]]
            stored_fp = str(data["model_fingerprint"])
    except (OSError, ValueError, KeyError, EOFError) as error:
        raise ValueError(f"{path} is not a readable tokens part ({error}); delete it and run again") from None
    if stored_fp != fingerprint or stored != names:
        raise ValueError(
            f"{path} holds tokens of another model or other images than this run would write there; "
            "choose another --out (or delete that folder's parts)"
        )
    return True


def encode_folder_parts(
    model: nn.Module,
    images_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    image_size: int,
    batch_size: int = 16,
    shard_size: int = 4096,
    num_workers: int = 0,
    tiling: Tiling | None | str = AUTO,
    progress: bool = False,
) -> Path:
    """Tokenize every image under ``images_dir`` into parts under ``out_dir`` (module docstring); every
    rank of an initialised process group calls it. ``tiling``: as in ``encode_folder`` (recorded in every
    part). Returns ``out_dir / "index.json"``."""
    from gaussquant.data.folder import ImageFolderDataset
    from gaussquant.encode import _progress, check_finite_weights

    require_discrete(getattr(model, "bottleneck", None), "encode")
    if image_size < 1 or batch_size < 1 or shard_size < 1:
        raise ValueError(f"image_size, batch_size and shard_size must be >= 1; got {image_size}, {batch_size}, "
                         f"{shard_size}")
    check_finite_weights(model, "encode")
    tiling = resolve_tiling(model, tiling)
    out = Path(out_dir)
    if out.suffix == ".npz" or out.is_file():
        raise ValueError(f"--out {str(out)!r} must be a folder for a parallel encode (it holds one part per "
                         f"{shard_size} images and index.json)")
    rank, world = rank_and_world()
    dataset = ImageFolderDataset(images_dir, image_size=image_size, mode="center", strict=True,
                                 share_listing=True)
    fingerprint = model_fingerprint(model)
    out.mkdir(parents=True, exist_ok=True)
    n = len(dataset)
    parts = [(p, start, min(n, start + shard_size)) for p, start in enumerate(range(0, n, shard_size))]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for part, start, stop in parts[rank::world]:
            path = out / part_name(part)
            if _part_is_done(path, dataset.files[start:stop], fingerprint):
                log.info("rank %d: %s already written; skipped", rank, path.name)
                continue
            loader = DataLoader(Subset(dataset, range(start, stop)), batch_size=batch_size, shuffle=False,
                                num_workers=num_workers)
            writer = TokenWriter(path, num_images=stop - start, codebook_size=model.bottleneck.codebook_size,
                                 image_size=(image_size, image_size), model_fingerprint=fingerprint,
                                 tiling=tiling_record(tiling))
            at = start
            with writer, torch.no_grad():
                for x in _progress(loader, progress and rank == 0, f"encode {path.name}"):
                    writer.write(tiled_tokenize(model, x.to(device), tiling), dataset.files[at:at + x.shape[0]])
                    at += x.shape[0]
                writer.close()
    finally:
        model.train(was_training)
    barrier()
    index = out / PARTS_INDEX
    if rank == 0:
        for part, start, stop in parts:  # every rank has finished: check the whole set before indexing it
            if not _part_is_done(out / part_name(part), dataset.files[start:stop], fingerprint):
                raise RuntimeError(f"part {part_name(part)} is missing after every rank finished")
        meta = {
            "format": PARTS_FORMAT, "version": 1, "num_images": n, "shard_size": shard_size,
            "model_fingerprint": fingerprint, "codebook_size": int(model.bottleneck.codebook_size),
            "image_size": [image_size, image_size],
            "parts": [{"file": part_name(p), "start": a, "count": b - a} for p, a, b in parts],
        }
        tmp = index.with_name(index.name + ".partial")
        tmp.write_text(json.dumps(meta, indent=1))
        os.replace(tmp, index)
        log.info("wrote %d images' tokens in %d parts to %s", n, len(parts), out)
    barrier()
    return index
