"""Image folders packed into tar shards with an index: ``gaussquant shards IMAGES --out DIR``.

Millions of small files are slow to list, copy and open on network storage; a few hundred tar files of
``shard_size`` images each are not. Layout of ``DIR``:

- ``SPLIT-NNNNN.tar``: plain (uncompressed) POSIX tar files; each member is one image file, named by its
  path relative to the split's folder (so ``tar -x`` gives the folder back); images keep their bytes;
- ``SPLIT.index.tsv``: one line per image, in the sorted order of the folder: ``shard<TAB>offset<TAB>size
  <TAB>name``, where ``offset`` is the byte position of the member's data in ``SPLIT-<shard>.tar``;
- ``shards.json``: ``{"format": "gaussquant-image-shards", "version": 1, "splits": {SPLIT: count}}``.

Splits: an ImageNet-layout folder (``train/`` and ``val/``) gives ``train`` and ``val``; any other folder
gives ``train`` only. Reading (:class:`ImageShardDataset`) seeks to ``offset`` and decodes ``size`` bytes:
random access, so shards train with the same sampler as folders (``data.source: shards``): a permutation
per epoch, ranks take disjoint items, resume lands on the exact next sample, crops are the folder ones
(``ImageShardDataset(...)[i]`` equals ``ImageFolderDataset(...)[i]`` of the packed folder). Shards are read
from a local or mounted file system; streaming from URLs is not supported.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
from pathlib import Path
from typing import BinaryIO

from gaussquant.data.file_list import walk_images
from gaussquant.data.folder import ImageFolderDataset

log = logging.getLogger(__name__)

SHARDS_FORMAT = "gaussquant-image-shards"
SHARDS_INDEX = "shards.json"


def _splits(images: Path) -> dict[str, Path]:
    if (images / "train").is_dir() and (images / "val").is_dir():
        return {"train": images / "train", "val": images / "val"}
    return {"train": images}


def write_shards(images_dir: str | os.PathLike, out_dir: str | os.PathLike, *, shard_size: int = 10000) -> Path:
    """Pack ``images_dir`` into tar shards of ``shard_size`` images under ``out_dir`` (module docstring).

    Returns ``out_dir / "shards.json"``, written last: a folder without it is an unfinished pack."""
    images, out = Path(images_dir), Path(out_dir)
    if shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1; got {shard_size}")
    if not images.is_dir():
        raise FileNotFoundError(f"image folder {str(images)!r} does not exist or is not a folder")
    if (out / SHARDS_INDEX).exists():
        raise FileExistsError(f"{out} already holds shards ({SHARDS_INDEX}); choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for split, root in _splits(images).items():
        files, _ = walk_images(root)
        if not files:
            raise FileNotFoundError(f"no image files found under {str(root)!r}")
        lines = []
        for shard, start in enumerate(range(0, len(files), shard_size)):
            path = out / f"{split}-{shard:05d}.tar"
            with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
                for name in files[start:start + shard_size]:
                    data = (root / name).read_bytes()
                    info = tarfile.TarInfo(name)
                    info.size, info.mode = len(data), 0o644
                    tar.addfile(info, io.BytesIO(data))
                    # the data end the archive so far, padded to whole 512-byte blocks
                    offset = tar.offset - -(-len(data) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
                    lines.append(f"{shard}\t{offset}\t{len(data)}\t{name}")
        (out / f"{split}.index.tsv").write_text("\n".join(lines) + "\n")
        counts[split] = len(files)
        log.info("packed %d %s images into %d shards", len(files), split, -(-len(files) // shard_size))
    meta = {"format": SHARDS_FORMAT, "version": 1, "shard_size": shard_size, "splits": counts}
    (out / SHARDS_INDEX).write_text(json.dumps(meta, indent=1))
    return out / SHARDS_INDEX


def shard_splits(root: str | os.PathLike) -> dict[str, int]:
    """``{split: image count}`` of a shard folder; an unfinished or foreign folder is an error."""
    path = Path(root) / SHARDS_INDEX
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise FileNotFoundError(
            f"{root} is not a finished shard folder ({SHARDS_INDEX} unreadable: {error}); "
            "write one with `gaussquant shards IMAGES --out DIR`"
        ) from None
    if meta.get("format") != SHARDS_FORMAT:
        raise ValueError(f"{path} is not a gaussquant shard index (format {meta.get('format')!r})")
    return {str(k): int(v) for k, v in meta["splits"].items()}


class ImageShardDataset(ImageFolderDataset):
    """The images of one split of a shard folder, exactly as :class:`ImageFolderDataset` gives the folder
    they were packed from (same order, crops, corrupt-file handling at load; ``files`` are member names).

    Args:
        root: the shard folder (``shards.json``, ``SPLIT.index.tsv``, ``SPLIT-NNNNN.tar``).
        split: ``"train"`` or ``"val"`` (when packed).
        image_size, mode, flip, strict, seed: as for :class:`ImageFolderDataset`.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", *, image_size: int, mode: str = "center",
                 flip: bool = False, strict: bool = False, seed: int = 0) -> None:
        if mode not in ("center", "random"):
            raise ValueError(f"mode must be 'center' or 'random', got {mode!r}")
        if image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        splits = shard_splits(root)
        if split not in splits:
            raise ValueError(f"{root} has no split {split!r} (it has {sorted(splits)})")
        self.root, self.split = Path(root), split
        self.image_size, self.mode, self.flip = int(image_size), mode, bool(flip)
        self.strict, self.seed, self.epoch = bool(strict), int(seed), 0
        self.skipped: dict[str, str] = {}
        self.files, self._where = [], {}
        for line in (self.root / f"{split}.index.tsv").read_text().splitlines():
            shard, offset, size, name = line.split("\t", 3)
            self.files.append(name)
            self._where[name] = (int(shard), int(offset), int(size))
        if len(self.files) != splits[split]:
            raise ValueError(f"{self.root / (split + '.index.tsv')} lists {len(self.files)} images, "
                             f"{SHARDS_INDEX} says {splits[split]}; pack the folder again")
        self._handles: dict[int, BinaryIO] = {}
        self._pid = os.getpid()

    def _source(self, name: str) -> BinaryIO:
        if self._pid != os.getpid():  # a loader worker: never share file positions with the parent
            self._handles, self._pid = {}, os.getpid()
        shard, offset, size = self._where[name]
        handle = self._handles.get(shard)
        if handle is None:
            handle = open(self.root / f"{self.split}-{shard:05d}.tar", "rb")  # noqa: SIM115 (kept open)
            self._handles[shard] = handle
        handle.seek(offset)
        return io.BytesIO(handle.read(size))

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handles"] = {}  # open files do not travel to worker processes
        return state
