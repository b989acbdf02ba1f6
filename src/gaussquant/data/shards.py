"""Image folders packed into tar shards with an index: ``gaussquant shards IMAGES --out DIR``.

Millions of small files are slow to list, copy and open on network storage; a few hundred tar files of
``shard_size`` images each are not. Layout of ``DIR``:

- ``SPLIT-NNNNN.tar``: plain (uncompressed) POSIX tar files; each member is one image file, named by its
  path relative to the split's folder (so ``tar -x`` gives the folder back); images keep their bytes;
- ``SPLIT.index.tsv``: one line per image, in the sorted order of the folder: ``shard<TAB>offset<TAB>size
  <TAB>name``, where ``offset`` is the byte position of the member's data in ``SPLIT-<shard>.tar``;
- ``shards.json``: ``{"format": "gaussquant-image-shards", "version": 2, "splits": {SPLIT: count},
  "files": {FILE: {"bytes": N, "sha256": HEX}}}`` for every tar and index file (version 1 had no
  ``files``: it reads from a local folder only).

Splits: an ImageNet-layout folder (``train/`` and ``val/``) gives ``train`` and ``val``; any other folder
gives ``train`` only. Reading (:class:`ImageShardDataset`) seeks to ``offset`` and decodes ``size`` bytes:
random access, so shards train with the same sampler as folders (``data.source: shards``): a permutation
per epoch, ranks take disjoint items, resume lands on the exact next sample, crops are the folder ones
(``ImageShardDataset(...)[i]`` equals ``ImageFolderDataset(...)[i]`` of the packed folder).

The folder may be local, an ``http(s)://`` URL or a ``pipe:COMMAND`` (``shard_source.py``). The index is
fetched once per process and checked against its SHA-256; a remote folder's shards are downloaded whole into
a local cache (``shard_cache.py``, which says why) and read there by offset, and the dataset's
``sample_groups`` (images per shard) let the sampler keep a few shards in use at a time.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tarfile
from collections import OrderedDict
from pathlib import Path
from typing import BinaryIO

from gaussquant.data.file_list import walk_images
from gaussquant.data.folder import ImageFolderDataset
from gaussquant.data.shard_cache import ShardCache
from gaussquant.data.shard_source import (
    ShardFetchError,
    ShardIntegrityError,
    ShardLocation,
    check_bytes,
    sha256_of,
)

log = logging.getLogger(__name__)

SHARDS_FORMAT = "gaussquant-image-shards"
SHARDS_INDEX = "shards.json"
OPEN_SHARDS = 8  # tar files a process keeps open at once (remote folders: evicted copies are freed on close)


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
    digests: dict[str, dict] = {}
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
            digests[path.name] = {"bytes": path.stat().st_size, "sha256": sha256_of(path)}
        index = out / f"{split}.index.tsv"
        index.write_text("\n".join(lines) + "\n")
        digests[index.name] = {"bytes": index.stat().st_size, "sha256": sha256_of(index)}
        counts[split] = len(files)
        log.info("packed %d %s images into %d shards", len(files), split, -(-len(files) // shard_size))
    meta = {"format": SHARDS_FORMAT, "version": 2, "shard_size": shard_size, "splits": counts, "files": digests}
    (out / SHARDS_INDEX).write_text(json.dumps(meta, indent=1))
    return out / SHARDS_INDEX


class ShardFolder:
    """A shard folder's ``shards.json``, read once from wherever it lives (``shard_source.py``).

    Args:
        root: local folder, ``http(s)://`` URL, ``pipe:COMMAND`` or a :class:`ShardLocation`.
    """

    def __init__(self, root: str | os.PathLike | ShardLocation) -> None:
        self.location = root if isinstance(root, ShardLocation) else ShardLocation(root)
        try:
            meta = json.loads(self.location.read(SHARDS_INDEX))
        except ShardFetchError as error:
            if self.location.is_remote:
                raise
            raise FileNotFoundError(
                f"{self.location.spec} is not a finished shard folder ({SHARDS_INDEX} unreadable: {error}); "
                "write one with `gaussquant shards IMAGES --out DIR`"
            ) from None
        except ValueError as error:
            raise ValueError(f"{self.location.where(SHARDS_INDEX)} is not valid JSON ({error}); "
                             "pack the folder again") from None
        if not isinstance(meta, dict) or meta.get("format") != SHARDS_FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else None
            raise ValueError(f"{self.location.where(SHARDS_INDEX)} is not a gaussquant shard index "
                             f"(format {found!r})")
        self.splits = {str(k): int(v) for k, v in meta["splits"].items()}
        self.files: dict[str, dict] = meta.get("files", {})
        if self.location.is_remote and not self.files:
            raise ValueError(f"{self.location.spec} was packed without file digests (shards.json version "
                             f"{meta.get('version')}); pack it again with `gaussquant shards` to read it remotely")

    def entry(self, name: str) -> dict | None:
        """``{"bytes", "sha256"}`` of file ``name`` (None in a version-1 folder)."""
        if not self.files:
            return None
        if name not in self.files:
            raise ValueError(f"{self.location.where(SHARDS_INDEX)} lists no file {name!r}; pack the folder again")
        return self.files[name]

    def members(self, split: str) -> list[tuple[int, int, int, str]]:
        """``(shard, offset, size, name)`` per image of ``split``, from its index (checked by digest)."""
        name = f"{split}.index.tsv"
        data = self.location.read(name)
        entry = self.entry(name)
        if entry is not None:
            check_bytes(self.location.where(name), len(data), entry["bytes"],
                        hashlib.sha256(data).hexdigest(), entry["sha256"])
        rows = []
        for line in data.decode("utf-8").splitlines():
            shard, offset, size, member = line.split("\t", 3)
            rows.append((int(shard), int(offset), int(size), member))
        if len(rows) != self.splits[split]:
            raise ValueError(f"{self.location.where(name)} lists {len(rows)} images, {SHARDS_INDEX} says "
                             f"{self.splits[split]}; pack the folder again")
        return rows


def shard_splits(root: str | os.PathLike | ShardFolder) -> dict[str, int]:
    """``{split: image count}`` of a shard folder; an unfinished or foreign folder is an error."""
    return (root if isinstance(root, ShardFolder) else ShardFolder(root)).splits


class _RemoteRoot(str):
    """A URL or pipe spec that joins file names like a path does (for messages of the folder dataset)."""

    def __truediv__(self, name: str) -> str:
        return f"{self.rstrip('/')}/{name}"


class ImageShardDataset(ImageFolderDataset):
    """The images of one split of a shard folder, exactly as :class:`ImageFolderDataset` gives the folder
    they were packed from (same order, crops, corrupt-file handling at load; ``files`` are member names).

    Args:
        root: the shard folder (``shards.json``, ``SPLIT.index.tsv``, ``SPLIT-NNNNN.tar``): a local path, an
            ``http(s)://`` URL, ``pipe:COMMAND`` (``shard_source.py``, or a :class:`ShardLocation` to set its
            timeout and retries), or a :class:`ShardFolder` read before.
        split: ``"train"`` or ``"val"`` (when packed).
        image_size, mode, flip, strict, seed: as for :class:`ImageFolderDataset`.
        cache_dir: remote folders: the local shard cache (None: ``~/.cache/gaussquant/shards``).
        cache_bytes: remote folders: bound on the cache's size in bytes.
    """

    def __init__(self, root: str | os.PathLike | ShardLocation | ShardFolder, split: str = "train", *, image_size: int,
                 mode: str = "center", flip: bool = False, strict: bool = False, seed: int = 0,
                 cache_dir: str | os.PathLike | None = None, cache_bytes: int = 20 * 2**30) -> None:
        if mode not in ("center", "random"):
            raise ValueError(f"mode must be 'center' or 'random', got {mode!r}")
        if image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        folder = root if isinstance(root, ShardFolder) else ShardFolder(root)
        if split not in folder.splits:
            raise ValueError(f"{folder.location.spec} has no split {split!r} (it has {sorted(folder.splits)})")
        self.folder, self.split = folder, split
        self.location = folder.location
        self.root = _RemoteRoot(self.location.spec) if self.location.is_remote else Path(self.location.spec)
        self.image_size, self.mode, self.flip = int(image_size), mode, bool(flip)
        self.strict, self.seed, self.epoch = bool(strict), int(seed), 0
        self.skipped: dict[str, str] = {}
        self.files, self._where = [], {}
        counts: dict[int, int] = {}
        for shard, offset, size, name in folder.members(split):
            self.files.append(name)
            self._where[name] = (shard, offset, size)
            counts[shard] = counts.get(shard, 0) + 1
        self.shard_sizes = [counts[s] for s in sorted(counts)]  # images per shard, in index order
        self.cache = ShardCache(self.location, cache_dir, max_bytes=cache_bytes) if self.location.is_remote else None
        if not self.location.is_remote:
            self._check_local_sizes(sorted(counts))
        self._handles: OrderedDict[int, BinaryIO] = OrderedDict()
        self._pid = os.getpid()

    @property
    def sample_groups(self) -> list[int] | None:
        """Images per shard when shards are fetched (the sampler then keeps a few shards in use at a time);
        None for a local folder (any order reads equally fast)."""
        return self.shard_sizes if self.cache is not None else None

    def _shard_name(self, shard: int) -> str:
        return f"{self.split}-{shard:05d}.tar"

    def _check_local_sizes(self, shards: list[int]) -> None:
        for shard in shards:  # one stat per shard: a truncated copy is an error at start, not mid-training
            name = self._shard_name(shard)
            entry = self.folder.entry(name)
            path = Path(self.location.where(name))
            if entry is not None and path.is_file() and path.stat().st_size < entry["bytes"]:
                raise ShardIntegrityError(f"{path} is truncated: {path.stat().st_size} of {entry['bytes']} "
                                          "bytes; copy the shard folder again")

    def _open(self, shard: int) -> BinaryIO:
        name = self._shard_name(shard)
        if self.cache is None:
            return open(self.location.where(name), "rb")  # noqa: SIM115 (kept open)
        entry = self.folder.entry(name)
        assert entry is not None  # ShardFolder refuses remote folders without digests
        return self.cache.open(name, size=entry["bytes"], sha256=entry["sha256"])

    def _handle(self, shard: int) -> BinaryIO:
        """The open tar file of ``shard`` (downloaded first when remote); at most OPEN_SHARDS stay open."""
        if self._pid != os.getpid():  # a loader worker: never share file positions with the parent
            self._handles, self._pid = OrderedDict(), os.getpid()
        handle = self._handles.get(shard)
        if handle is None:
            handle = self._handles[shard] = self._open(shard)
            while len(self._handles) > OPEN_SHARDS:
                self._handles.popitem(last=False)[1].close()
        self._handles.move_to_end(shard)
        return handle

    def _load(self, index: int):  # noqa: ANN202 (the folder dataset's array or None)
        # why: fetching the shard happens here, outside the folder's decode-error handling, so an unreachable
        # URL or a digest mismatch is an error rather than an image skipped as corrupt
        self._handle(self._where[self.files[index]][0])
        return super()._load(index)

    def _source(self, name: str) -> BinaryIO:
        shard, offset, size = self._where[name]
        handle = self._handle(shard)
        handle.seek(offset)
        return io.BytesIO(handle.read(size))

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handles"] = OrderedDict()  # open files do not travel to worker processes
        return state
