"""Where a shard folder lives: a local path, an ``http(s)://`` URL, or a ``pipe:COMMAND``; fetch its files.

``data.path`` of ``data.source: shards`` (and the root of :class:`~gaussquant.data.shards.ImageShardDataset`)
names the folder ``gaussquant shards`` wrote, in one of three forms:

- a local or mounted folder: ``/data/shards``;
- a URL of that folder served over HTTP(S): ``https://host/imagenet-shards`` (file ``F`` is read from
  ``https://host/imagenet-shards/F``), with the standard library's ``urllib`` (streamed, 1 MiB chunks);
- ``pipe:COMMAND``: a shell command that writes one file of the folder to stdout, with ``{}`` where the
  file's name goes, e.g. ``pipe:curl -sSf https://host/shards/{}``, ``pipe:aws s3 cp s3://bucket/shards/{} -``
  or ``pipe:cat /data/shards/{}``. webdataset also writes ``pipe:COMMAND``, but names every shard in a brace
  pattern; here the folder's index names its files, so the command only needs the one ``{}`` (file names are
  ``shards.json``, ``SPLIT.index.tsv`` and ``SPLIT-NNNNN.tar``: letters, digits, ``.``, ``-``; no quoting).

:meth:`ShardLocation.read` returns a small file's bytes (the index); :meth:`ShardLocation.download` streams a
shard into a local file while counting and hashing it, and checks both against the index (a shorter file is
*truncated*, different bytes are a *digest mismatch*). Each failure is one sentence naming the file, the
location and what to do: an unreachable URL (the reason), a failed pipe command (its exit status and the end
of its stderr), a truncated file, a digest mismatch. Network and pipe failures are retried (``retries``
attempts, 1 s then 2 s, ... apart) because remote storage drops connections; a digest mismatch is not.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shlex
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # bytes per read when streaming
STDERR_TAIL = 400  # characters of a failed pipe command's stderr quoted in the error


class ShardFetchError(OSError):
    """A shard folder's file could not be read from its location (message says which, why, what to do);
    ``retry``: whether trying again may help (a network or pipe failure; not an HTTP 4xx answer)."""

    def __init__(self, message: str, *, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


class _HttpBody:
    """An HTTP response's body whose read failures become :class:`ShardFetchError` (not a disk error's)."""

    def __init__(self, response: http.client.HTTPResponse, url: str) -> None:
        self.response, self.url = response, url

    def read(self, size: int = -1) -> bytes:
        try:
            return self.response.read(size)
        except http.client.IncompleteRead as error:
            raise ShardFetchError(f"the connection to {self.url} closed after {len(error.partial)} more bytes "
                                  f"({error.expected} more expected); check the server and retry") from None
        except (OSError, http.client.HTTPException) as error:
            raise ShardFetchError(f"reading {self.url} failed mid-transfer ({error}); check the network and "
                                  "the server") from None


class ShardIntegrityError(ValueError):
    """A file read from a shard folder is truncated or its SHA-256 differs from the folder's index."""


class ShardLocation:
    """One shard folder's location (module docstring): ``kind`` is ``"local"``, ``"http"`` or ``"pipe"``.

    Args:
        spec: the folder path, its ``http(s)://`` URL, or ``pipe:COMMAND`` with ``{}`` for the file name.
        timeout: seconds an HTTP connection or read may stall before it counts as failed.
        retries: attempts per file for network and pipe failures (>= 1).
    """

    def __init__(self, spec: str | os.PathLike, *, timeout: float = 60.0, retries: int = 3) -> None:
        self.spec = str(spec)
        if retries < 1:
            raise ValueError(f"retries must be >= 1, got {retries}")
        self.timeout, self.retries = float(timeout), int(retries)
        if self.spec.startswith("pipe:"):
            self.kind = "pipe"
            if "{}" not in self.spec:
                raise ValueError(f"{self.spec!r} has no {{}}: write the file name's place, e.g. "
                                 "pipe:curl -sSf https://host/shards/{}")
        elif self.spec.startswith(("http://", "https://")):
            self.kind = "http"
        else:
            self.kind = "local"

    @property
    def is_remote(self) -> bool:
        """True for URLs and pipes (read through a local cache), False for a folder on this machine."""
        return self.kind != "local"

    def where(self, name: str) -> str:
        """The path, URL or shell command that reads file ``name`` (for messages and the reader)."""
        if self.kind == "pipe":
            return self.spec[len("pipe:"):].replace("{}", name)
        if self.kind == "http":
            return self.spec.rstrip("/") + "/" + name
        return str(Path(self.spec) / name)

    def read(self, name: str) -> bytes:
        """All bytes of the (small) file ``name``: the folder index."""
        return self._retry(name, lambda: self._read_once(name))

    def _read_once(self, name: str) -> bytes:
        with self._stream(name) as stream:
            return stream.read()

    def download(self, name: str, dest: Path, *, size: int, sha256: str) -> None:
        """Stream file ``name`` into ``dest`` (created or overwritten), checking ``size`` bytes and ``sha256``."""
        self._retry(name, lambda: self._download_once(name, dest, size, sha256))

    def _download_once(self, name: str, dest: Path, size: int, sha256: str) -> None:
        digest, count = hashlib.sha256(), 0
        with self._stream(name) as stream, open(dest, "wb") as out:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
                count += len(chunk)
        check_bytes(self.where(name), count, size, digest.hexdigest(), sha256)

    def _retry(self, name: str, attempt):  # noqa: ANN001, ANN202 (a thunk and its result)
        for i in range(self.retries):
            try:
                return attempt()
            except ShardFetchError as error:
                if i + 1 == self.retries or not error.retry:
                    raise
                log.warning("reading %s failed (%s); retrying in %d s", self.where(name), error, i + 1)
                time.sleep(i + 1)
        raise AssertionError("unreachable")

    @contextmanager
    def _stream(self, name: str) -> Iterator[BinaryIO]:
        if self.kind == "pipe":
            with self._pipe(name) as stream:
                yield stream
        elif self.kind == "http":
            with self._http(name) as stream:
                yield stream
        else:
            try:
                stream = open(self.where(name), "rb")  # noqa: SIM115 (closed below)
            except OSError as error:
                raise ShardFetchError(f"cannot read {self.where(name)} ({error.strerror or error}); is "
                                      f"{self.spec} a folder written by `gaussquant shards`?") from None
            with stream:
                yield stream

    @contextmanager
    def _http(self, name: str) -> Iterator[BinaryIO]:
        url = self.where(name)
        try:
            response = urllib.request.urlopen(url, timeout=self.timeout)  # noqa: S310 (http(s) only)
        except urllib.error.HTTPError as error:
            raise ShardFetchError(f"cannot read {url}: the server answered HTTP {error.code} {error.reason}; "
                                  "check the URL names a folder written by `gaussquant shards`",
                                  retry=error.code >= 500) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            reason = getattr(error, "reason", None) or error
            raise ShardFetchError(f"cannot reach {url} ({reason}); check the address and that the server "
                                  "is up") from None
        with response:
            yield _HttpBody(response, url)  # type: ignore[misc]

    @contextmanager
    def _pipe(self, name: str) -> Iterator[BinaryIO]:
        command = self.where(name)
        with tempfile.TemporaryFile() as stderr:  # a file, not a pipe: a chatty command cannot block on it
            process = subprocess.Popen(command, shell=True, stdout=subprocess.PIPE, stderr=stderr)  # noqa: S602
            assert process.stdout is not None
            try:
                yield process.stdout
            finally:
                process.stdout.close()  # a command still writing (we stopped early) ends on SIGPIPE
                status = process.wait()
            if status:
                stderr.seek(0)
                tail = stderr.read().decode("utf-8", "replace").strip()[-STDERR_TAIL:]
                raise ShardFetchError(f"pipe command {shlex.quote(command)} failed with exit status {status}: "
                                      f"{tail or '(no stderr)'}")


def check_bytes(where: str, count: int, size: int, digest: str, expected: str) -> None:
    """Raise :class:`ShardIntegrityError` unless ``count == size`` and ``digest == expected`` (hex SHA-256)."""
    if count < size:
        raise ShardIntegrityError(f"{where} is truncated: {count} of {size} bytes arrived; fix or re-upload "
                                  "the shard folder (or retry if the transfer was cut)")
    if count != size or digest != expected:
        raise ShardIntegrityError(f"{where} does not match the folder index ({count} bytes, SHA-256 "
                                  f"{digest[:12]}..., index says {size} bytes, {expected[:12]}...); the "
                                  "files were changed after packing: pack the folder again")


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a local file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
