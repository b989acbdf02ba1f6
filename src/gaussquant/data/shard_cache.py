"""A size-bounded local folder of whole shards fetched from a URL or pipe (``data.shard_cache``).

Why whole shards in a cache, not a stream: the tar shards of ``gaussquant shards`` are read by byte offset,
so the sampler's guarantees (a permutation per epoch, disjoint ranks, resume at the exact next sample; see
``sampler.py``) hold only with random access. A stream (webdataset's way: shard order shuffled, then a
bounded shuffle buffer) gives an order that depends on worker count and buffer fill, and resuming it exactly
means replaying the stream. A local copy of each shard keeps random access, so a remote folder trains with
the very order and crops of a local one; the sampler only groups the order by shards (``shard_window``) so
that a few shards are in use at a time and the cache can stay small.

Each shard is downloaded once per machine: processes (ranks of one node, loader workers) share the folder and
take a lock file per shard (``fcntl.flock``), so the others wait for the one that downloads. A download goes to
``NAME.part-PID``, is checked (byte count and SHA-256 from the index) and only then renamed to its final name
(atomic), so a crash leaves no half file that looks whole (its ``.part`` file is deleted an hour later). Files are named by their digest, so a re-packed
folder never reads a stale copy. After each download the least recently used shards are deleted until the
folder holds at most ``max_bytes`` (the newest shard is always kept; readers that still have an evicted file
open keep reading it: POSIX frees it when they close it).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from gaussquant.data.shard_source import ShardFetchError, ShardLocation

try:  # POSIX; elsewhere two processes may download the same shard (still correct: atomic rename)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

STALE_PART_S = 3600  # a download's .part file untouched this long (seconds) was left by a crash


def default_cache_root() -> Path:
    """``$XDG_CACHE_HOME/gaussquant/shards`` (``~/.cache/gaussquant/shards`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gaussquant" / "shards"


class ShardCache:
    """Local copies of one remote shard folder's tar files.

    Args:
        location: where the shard folder lives (a URL or pipe; see ``shard_source.py``).
        root: cache folder (None: :func:`default_cache_root`); each location gets its own subfolder.
        max_bytes: bound on the bytes of complete shards kept (>= 1; one shard is always kept).
    """

    def __init__(self, location: ShardLocation, root: str | os.PathLike | None = None, *,
                 max_bytes: int = 20 * 2**30) -> None:
        if max_bytes < 1:
            raise ValueError(f"the shard cache bound must be >= 1 byte, got {max_bytes}")
        self.location, self.max_bytes = location, int(max_bytes)
        key = hashlib.sha256(location.spec.encode()).hexdigest()[:16]
        self.folder = Path(root if root is not None else default_cache_root()) / key

    def open(self, name: str, *, size: int, sha256: str) -> BinaryIO:
        """An open, verified local copy of shard ``name`` (``size`` bytes, hex ``sha256``), downloaded if needed.

        Opened here, so another process evicting it right after cannot take it away (the open file lives on)."""
        for _ in range(3):  # a copy evicted between "exists" and "open" is downloaded again
            try:
                return open(self.path(name, size=size, sha256=sha256), "rb")  # noqa: SIM115 (the caller closes)
            except FileNotFoundError:
                continue
        raise ShardFetchError(f"shard {name} keeps disappearing from the cache {self.folder}; raise "
                              "data.shard_cache_gb (other processes evict it as soon as it arrives)", retry=False)

    def path(self, name: str, *, size: int, sha256: str) -> Path:
        """The path of a verified local copy of shard ``name``, downloaded if needed (see :meth:`open`)."""
        final = self.folder / f"{sha256[:20]}-{name}"
        if final.exists():
            os.utime(final)  # most recently used
            return final
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._lock(final.name):
            if final.exists():  # another process downloaded it while we waited
                os.utime(final)
                return final
            part = final.with_name(f"{final.name}.part-{os.getpid()}")
            log.info("downloading %s (%.1f MB) into %s", self.location.where(name), size / 1e6, self.folder)
            try:
                self.location.download(name, part, size=size, sha256=sha256)
                os.replace(part, final)
            finally:
                part.unlink(missing_ok=True)
        self._evict(keep=final)
        return final

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        if fcntl is None:  # pragma: no cover
            yield
            return
        with open(self.folder / f"{name}.lock", "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _evict(self, keep: Path) -> None:
        shards, now = [], time.time()
        for entry in os.scandir(self.folder):
            try:  # other processes rename and delete files here at the same time
                stat = entry.stat()
            except FileNotFoundError:
                continue
            if entry.name.endswith(".tar"):
                shards.append((stat.st_mtime, stat.st_size, Path(entry.path)))
            elif ".part-" in entry.name and now - stat.st_mtime > STALE_PART_S:
                Path(entry.path).unlink(missing_ok=True)  # left by a crashed download (live ones keep writing)
        total = sum(size for _, size, _ in shards)
        for _, size, path in sorted(shards):  # oldest use first
            if total <= self.max_bytes:
                break
            if path == keep:
                continue
            path.unlink(missing_ok=True)
            total -= size
            log.info("shard cache over %d bytes: removed %s", self.max_bytes, path.name)
