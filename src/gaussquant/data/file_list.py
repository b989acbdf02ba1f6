"""The list of image files of a folder: one fast walk, cached, and shared by the ranks of a job.

Listing a folder of a million images is the slow part of starting a run on ImageNet-size data, so:

- **one walk** with :func:`os.scandir` (file type from the directory entry, no per-file ``stat``);
- **a cache**: the sorted list, the modification time of every directory walked, and the results of any
  header/decode check are written to ``<cache_dir>/files-<hash of the folder's absolute path>.json``. At the
  next start the cache is used when every recorded directory still has its recorded modification time
  (one ``stat`` per directory, not per file: adding, removing or renaming a file changes its directory's
  time, so a changed folder is listed again). A file rewritten in place keeps its directory's time: delete
  the cache file after repairing images, or the header results it holds stay as they were.
  By default the cache lives beside the data in ``<folder>/.gaussquant/`` (that sub-folder is skipped by
  the walk); a read-only folder gets no cache (one info message) and is listed at every start;
- **shared by ranks**: with ``share=True`` under an initialised ``torch.distributed`` group of several
  processes, rank 0 lists (and checks) the folder and broadcasts the result; the other ranks wait for it
  instead of walking the same folder at the same time. Every rank must then build the list (a collective).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
CACHE_DIRNAME = ".gaussquant"
CACHE_VERSION = 1
# checks, weakest first: a cache made with a stronger check serves a weaker request
CHECKS = ("none", "headers", "decode")


def walk_images(root: Path) -> tuple[list[str], dict[str, int]]:
    """``(files, dirs)``: sorted relative POSIX paths of the image files under ``root`` (recursively, any
    case of :data:`IMAGE_EXTENSIONS`), and ``{relative dir ("" = root): st_mtime_ns}`` of every directory
    walked. The cache folder :data:`CACHE_DIRNAME` directly under ``root`` is skipped."""
    files: list[str] = []
    dirs: dict[str, int] = {"": os.stat(root).st_mtime_ns}
    stack: list[tuple[str, str]] = [(str(root), "")]
    while stack:
        path, rel = stack.pop()
        with os.scandir(path) as entries:
            for entry in entries:
                name = entry.name
                child = f"{rel}/{name}" if rel else name
                if entry.is_dir():
                    if rel == "" and name == CACHE_DIRNAME:
                        continue
                    dirs[child] = entry.stat().st_mtime_ns
                    stack.append((entry.path, child))
                elif os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS and entry.is_file():
                    files.append(child)
    files.sort()
    return files, dirs


def _cache_file(root: Path, cache_dir: Path) -> Path:
    digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]
    return cache_dir / f"files-{digest}.json"


def _read_cache(path: Path, root: Path, check: str) -> tuple[list[str], dict[str, str]] | None:
    try:
        data = json.loads(path.read_text())
        if data.get("version") != CACHE_VERSION or CHECKS.index(data["check"]) < CHECKS.index(check):
            return None
        for rel, mtime in data["dirs"].items():
            if os.stat(root / rel).st_mtime_ns != mtime:
                return None
        return list(data["files"]), dict(data["bad"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing, unreadable, stale or from another version: list again


def _write_cache(path: Path, root: Path, dirs: dict[str, int], files: list[str], bad: dict[str, str],
                 check: str) -> None:
    data = {"version": CACHE_VERSION, "root": str(root.resolve()), "check": check, "dirs": dirs,
            "files": files, "bad": bad}
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)  # atomic: a reader sees the old cache or the new one, never half of one
    except OSError as error:
        log.info("could not write the file-list cache %s (%s); the folder is listed at every start", path, error)
        tmp.unlink(missing_ok=True)


def _prepare_cache_dir(root: Path, cache_dir: str | Path | None) -> Path | None:
    """The cache folder (created), or None when there is none or it cannot be created."""
    if cache_dir is None:
        return None
    folder = Path(cache_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)  # before the walk, so root's recorded time includes it
        return folder
    except OSError as error:
        log.info("no file-list cache for %s (%s cannot be created: %s); listing it at every start",
                 root, folder, error)
        return None


def _run_checks(root: Path, files: list[str], checker: Callable[[Path], str | None] | None,
                num_threads: int) -> dict[str, str]:
    if checker is None:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
        problems = list(pool.map(checker, (root / name for name in files)))
    return {name: why for name, why in zip(files, problems) if why is not None}


def _build(root: Path, *, check: str, checker: Callable[[Path], str | None] | None,
           cache_dir: str | Path | None, num_threads: int) -> tuple[list[str], dict[str, str]]:
    folder = _prepare_cache_dir(root, cache_dir)
    path = _cache_file(root, folder) if folder is not None else None
    if path is not None:
        cached = _read_cache(path, root, check)
        if cached is not None:
            log.debug("file list of %s read from %s (%d files)", root, path, len(cached[0]))
            return cached
    files, dirs = walk_images(root)
    bad = _run_checks(root, files, checker, num_threads)
    if path is not None and files:
        _write_cache(path, root, dirs, files, bad, check)
    return files, bad


def image_file_index(
    root: str | Path,
    *,
    check: str = "none",
    checker: Callable[[Path], str | None] | None = None,
    cache_dir: str | Path | None = None,
    share: bool = False,
    num_threads: int = 8,
) -> tuple[list[str], dict[str, str]]:
    """``(files, bad)``: every image file under ``root`` (sorted relative paths, including bad ones) and
    ``{file: reason}`` for those that failed ``checker``.

    Args:
        root: the folder (must exist).
        check: the name of the check ``checker`` makes (one of :data:`CHECKS`), recorded in the cache.
        checker: ``path -> None | reason``, run on every file in a thread pool; None with ``check="none"``.
        cache_dir: folder of the cache file (see the module docstring); None = no cache.
        share: rank 0 builds, the other ranks of the initialised process group receive it.
        num_threads: threads of the check.
    """
    root = Path(root)
    if check not in CHECKS:
        raise ValueError(f"check must be one of {CHECKS}, got {check!r}")
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist or is not a folder")
    kwargs = dict(check=check, checker=checker, cache_dir=cache_dir, num_threads=num_threads)
    if share:
        import torch.distributed as dist

        from gaussquant.distributed import rank_and_world

        if rank_and_world()[1] > 1:
            box: list[object] = [None]
            if dist.get_rank() == 0:
                try:
                    box[0] = _build(root, **kwargs)
                except (OSError, ValueError) as error:  # sent on, so that no rank waits forever
                    box[0] = error
            dist.broadcast_object_list(box, src=0)
            if isinstance(box[0], BaseException):
                raise box[0]
            files, bad = box[0]  # type: ignore[misc]
            return files, bad
    return _build(root, **kwargs)
