"""Tokens on disk: the ``.npz`` format that ``gaussquant encode`` writes and ``gaussquant decode`` reads.

docs/method.md section 4 makes a converted model a VQ-VAE whose tokens are integer indices into a fixed codebook;
users need to decode from indices, and a fingerprint that catches tokens from a different model. This file
holds the format (a streaming writer, a validating reader, the compact dtype and the model fingerprint);
``encode_folder`` / ``decode_tokens`` at the bottom drive a model over a folder.

Format (``numpy.load`` opens it with ``allow_pickle=False``; every member is a plain array):

- ``indices``: ``(N, G, h, w)`` for channel-first models or ``(N, L, G)`` for token-last ones, dtype
  ``uint8`` when K <= 2^8, ``uint16`` when K <= 2^16, else ``uint32``; values in [0, K).
- ``file_names``: ``(N,)`` unicode, each image's path relative to the encoded folder, in index order.
- ``codebook_size`` (K), ``num_groups`` (G), ``format_version``: int64 scalars.
- ``grid``: the token grid, ``(h, w)`` or ``(L,)``; ``image_size``: ``(H, W)`` of the encoded images.
- ``layout``: ``"channel_first"`` or ``"token_last"``; ``model_fingerprint``: 64 hex characters.
- ``tiling`` (optional): ``(window, margin)`` pixels of the windows the encoder ran in (gaussquant/tiling.py),
  ``(0, 0)`` for one pass; absent in files written without it (``TokenFile.tiling`` is then None).
  ``gaussquant decode`` decodes in the same windows unless told otherwise.

The model fingerprint is the SHA-256 of a description of the bottleneck (class name and, where present,
``codebook_size``, ``num_groups``, ``codebook_dim``, ``grouping``, ``rule``, ``beta``, ``latent_channels``; as
canonical JSON) followed by, for every entry of ``model.state_dict()`` in name order, its name, dtype, shape
and raw bytes. It therefore covers the codebook (a buffer), the channel grouping, the search rule and every
weight, and is computed from the model object alone (the same for a model built in memory and for the one
``from_pretrained`` loads from its save). Tokens decode only with the exact model that wrote them.
Hashing runs once per command (about 1 s per 350 MB of weights).

Writing streams: the number of images is known from the folder listing, so the header of ``indices.npy``
is written first and each batch's indices are appended as they come; images are never all in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
PARTS_FORMAT = "gaussquant-token-parts"
PARTS_INDEX = "index.json"
PARTIAL_SUFFIX = ".partial"
LAYOUTS = ("channel_first", "token_last")
_REQUIRED = (
    "indices", "file_names", "codebook_size", "num_groups", "grid", "image_size", "layout",
    "model_fingerprint", "format_version",
)


def check_output_path(path: str | os.PathLike, what: str = "--out") -> Path:
    """Raise ValueError when ``path`` cannot be created because it or a parent folder is a file."""
    path = Path(path)
    for ancestor in path.parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise ValueError(f"cannot write {what} {str(path)!r}: {str(ancestor)!r} is a file, not a folder; "
                                 f"choose another {what}")
            break
    return path


def index_dtype(codebook_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds indices in [0, K): uint8, uint16 or uint32."""
    if codebook_size < 2:
        raise ValueError(f"codebook_size must be >= 2; got {codebook_size}")
    if codebook_size <= 2**8:
        return np.dtype(np.uint8)
    if codebook_size <= 2**16:
        return np.dtype(np.uint16)
    if codebook_size <= 2**32:
        return np.dtype(np.uint32)
    raise ValueError(f"codebook_size {codebook_size} does not fit in uint32 token files")


# Bottleneck attributes that change what indices mean (grouping, search rule) without changing any weight.
# the bottleneck's settings that change what an index means; FSQ's levels order and index_order are in no weight
# ([8, 6, 5] and [5, 6, 8] have the same K and the same weights). Only plain values count (TokenBridge's
# ``levels`` is a tensor derived from codebook_size).
_FINGERPRINT_ATTRS = ("codebook_size", "num_groups", "codebook_dim", "grouping", "rule", "beta", "latent_channels",
                      "levels", "index_order")
_PLAIN = (type(None), bool, int, float, str, list, tuple)


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 (hex) of the bottleneck's description and every state-dict entry (name, dtype, shape, bytes)."""
    digest = hashlib.sha256()
    bottleneck = getattr(model, "bottleneck", model)
    description = {name: getattr(bottleneck, name) for name in _FINGERPRINT_ATTRS
                   if hasattr(bottleneck, name) and isinstance(getattr(bottleneck, name), _PLAIN)}
    description["class"] = type(bottleneck).__name__
    digest.update(json.dumps(description, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"|{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        # viewed as bytes: works for dtypes numpy lacks (bfloat16)
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


@dataclass
class TokenFile:
    """The contents of a tokens ``.npz`` (see the module docstring for shapes and dtypes)."""

    indices: np.ndarray
    file_names: list[str]
    codebook_size: int
    num_groups: int
    grid: tuple[int, ...]
    image_size: tuple[int, int]
    layout: str
    model_fingerprint: str
    tiling: tuple[int, int] | None = None  # (window, margin) pixels; (0, 0) = one pass; None = not recorded

    @property
    def num_images(self) -> int:
        return int(self.indices.shape[0])

    def batch(self, start: int, stop: int) -> Tensor:
        """Indices ``[start, stop)`` as the int64 tensor ``detokenize`` takes."""
        return torch.from_numpy(self.indices[start:stop].astype(np.int64))


def _layout_of(indices: Tensor) -> str:
    if indices.dim() == 4:
        return "channel_first"
    if indices.dim() == 3:
        return "token_last"
    raise ValueError(f"indices must be (B, G, h, w) or (B, L, G); got shape {tuple(indices.shape)}")


def _grid_and_groups(shape: Sequence[int], layout: str) -> tuple[tuple[int, ...], int]:
    if layout == "channel_first":
        return (int(shape[2]), int(shape[3])), int(shape[1])
    return (int(shape[1]),), int(shape[2])


class TokenWriter:
    """Stream indices into a tokens ``.npz`` batch by batch.

    The file appears at ``path`` only when :meth:`close` succeeds (it is written to ``path + ".partial"``
    first), so an interrupted run never leaves a truncated token file behind; a ``.partial`` file left by a
    killed run is removed (and logged) by the next writer of the same path. Use as a context manager.

    Args:
        path: output ``.npz``.
        num_images: N, the total number of images that will be written.
        codebook_size: K (>= 2); sets the dtype.
        image_size: ``(H, W)`` of the encoded images.
        model_fingerprint: :func:`model_fingerprint` of the encoding model.
        tiling: ``(window, margin)`` pixels of the encoder's windows, ``(0, 0)`` for one pass, None to record
            nothing (the module docstring).
    """

    def __init__(
        self, path: str | os.PathLike, *, num_images: int, codebook_size: int,
        image_size: tuple[int, int], model_fingerprint: str, tiling: tuple[int, int] | None = None,
    ) -> None:
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1; got {num_images}")
        self.path = Path(path)
        if self.path.suffix != ".npz":
            raise ValueError(f"the tokens file must end in .npz; got {self.path}")
        self.num_images = num_images
        self.codebook_size = int(codebook_size)
        self.dtype = index_dtype(self.codebook_size)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.fingerprint = model_fingerprint
        self.tiling = None if tiling is None else (int(tiling[0]), int(tiling[1]))
        self.file_names: list[str] = []
        self._tmp = self.path.with_name(self.path.name + PARTIAL_SUFFIX)
        check_output_path(self.path)
        if self.path.is_dir():
            raise ValueError(f"cannot write the tokens file {str(self.path)!r}: it is a folder; choose another --out")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._tmp.exists():
            log.info("removing %s, left by an interrupted encode", self._tmp)
            self._tmp.unlink()
        self._zip = zipfile.ZipFile(self._tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
        self._member = None
        self._shape: tuple[int, ...] | None = None  # per-image shape, fixed by the first batch
        self._layout = ""

    def write(self, indices: Tensor, names: Sequence[str]) -> None:
        """Append one batch: ``indices`` ``(B, G, h, w)`` or ``(B, L, G)`` int, ``names`` B file names."""
        if len(names) != indices.shape[0]:
            raise ValueError(f"{indices.shape[0]} index rows but {len(names)} file names")
        if indices.dtype.is_floating_point:
            raise TypeError(f"indices must be integers; got {indices.dtype}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
            raise ValueError(
                f"indices out of range [0, {self.codebook_size}): found [{int(indices.min())}, "
                f"{int(indices.max())}]; the model's codebook_size does not match its indices"
            )
        if self._member is None:
            self._layout = _layout_of(indices)
            self._shape = tuple(int(s) for s in indices.shape[1:])
            header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                      "shape": (self.num_images, *self._shape)}
            self._member = self._zip.open("indices.npy", "w", force_zip64=True)
            np.lib.format.write_array_header_2_0(self._member, header)
        elif tuple(indices.shape[1:]) != self._shape:
            raise ValueError(f"batch of shape {tuple(indices.shape)} does not match earlier {self._shape}")
        if len(self.file_names) + len(names) > self.num_images:
            raise ValueError(f"more than the announced {self.num_images} images were written")
        self._member.write(indices.detach().cpu().numpy().astype(self.dtype, copy=False).tobytes("C"))
        self.file_names.extend(str(n) for n in names)

    def close(self) -> Path:
        """Finish the file; raise if fewer images than announced were written."""
        if self._member is None or len(self.file_names) != self.num_images:
            self.abort()
            raise RuntimeError(
                f"token file incomplete: {len(self.file_names)} of {self.num_images} images written"
            )
        self._member.close()
        assert self._shape is not None
        grid, groups = _grid_and_groups((self.num_images, *self._shape), self._layout)
        extras = {
            "file_names": np.array(self.file_names, dtype=str),
            "codebook_size": np.int64(self.codebook_size), "num_groups": np.int64(groups),
            "grid": np.array(grid, dtype=np.int64), "image_size": np.array(self.image_size, dtype=np.int64),
            "layout": np.array(self._layout), "model_fingerprint": np.array(self.fingerprint),
            "format_version": np.int64(FORMAT_VERSION),
        }
        if self.tiling is not None:
            extras["tiling"] = np.array(self.tiling, dtype=np.int64)
        for key, value in extras.items():
            with self._zip.open(f"{key}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(value), allow_pickle=False)
        self._zip.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the partial file."""
        try:
            if self._member is not None:
                self._member.close()
            self._zip.close()
        finally:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "TokenWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def load_tokens(path: str | os.PathLike) -> TokenFile:
    """Read and validate a tokens ``.npz`` (indices are loaded whole: they are compact), or a folder of
    parts written by a parallel encode (:func:`load_token_parts`)."""
    path = Path(path)
    if path.is_dir():
        return load_token_parts(path)
    if path.name.endswith(PARTIAL_SUFFIX):
        raise ValueError(
            f"{path} is an unfinished tokens file left by an interrupted encode; delete it and run "
            "`gaussquant encode` again"
        )
    if not path.is_file():
        raise FileNotFoundError(f"tokens file not found: {path} (write one with `gaussquant encode`)")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes), not a tokens file; run `gaussquant encode` again")
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is not a gaussquant tokens .npz file, or it is truncated ({err})") from None
    with data:
        missing = [k for k in _REQUIRED if k not in data.files]
        if missing:
            raise ValueError(f"{path} is not a gaussquant tokens file: missing {missing}")
        version = int(data["format_version"])
        if version != FORMAT_VERSION:
            raise ValueError(f"{path} has token format version {version}; this library reads {FORMAT_VERSION}")
        tokens = TokenFile(
            indices=data["indices"], file_names=[str(n) for n in data["file_names"]],
            codebook_size=int(data["codebook_size"]), num_groups=int(data["num_groups"]),
            grid=tuple(int(g) for g in data["grid"]), image_size=tuple(int(s) for s in data["image_size"]),
            layout=str(data["layout"]), model_fingerprint=str(data["model_fingerprint"]),
            tiling=_read_tiling(data, path),
        )
    _validate(tokens, path)
    return tokens


def _read_tiling(data: Any, path: Path) -> tuple[int, int] | None:
    """The optional ``tiling`` member as ``(window, margin)``, None when absent."""
    if "tiling" not in data.files:
        return None
    value = np.asarray(data["tiling"])
    if value.shape != (2,) or value.dtype.kind not in "iu" or int(value.min()) < 0:
        raise ValueError(f"{path}: tiling must be two non-negative integers (window, margin); got {value!r}")
    return int(value[0]), int(value[1])


def _validate(tokens: TokenFile, path: Path) -> None:
    idx = tokens.indices
    if tokens.layout not in LAYOUTS:
        raise ValueError(f"{path}: unknown layout {tokens.layout!r}; expected one of {LAYOUTS}")
    if idx.dtype != index_dtype(tokens.codebook_size):
        raise ValueError(f"{path}: indices have dtype {idx.dtype}, expected {index_dtype(tokens.codebook_size)}")
    rank = 4 if tokens.layout == "channel_first" else 3
    if idx.ndim != rank:
        raise ValueError(f"{path}: {tokens.layout} indices must have rank {rank}; got shape {idx.shape}")
    grid, groups = _grid_and_groups(idx.shape, tokens.layout)
    if grid != tokens.grid or groups != tokens.num_groups:
        raise ValueError(f"{path}: indices shape {idx.shape} disagrees with grid {tokens.grid} / G={tokens.num_groups}")
    if len(tokens.file_names) != idx.shape[0]:
        raise ValueError(f"{path}: {idx.shape[0]} index rows but {len(tokens.file_names)} file names")
    check_index_range(idx, tokens.codebook_size, str(path))


def check_index_range(indices: np.ndarray, codebook_size: int, what: str = "tokens") -> None:
    """Raise ValueError when any index is >= K (uint arrays cannot be negative)."""
    if indices.size and int(indices.max()) >= codebook_size:
        bad = int(np.count_nonzero(indices >= codebook_size))
        raise ValueError(
            f"{what}: {bad} indices are out of range (max {int(indices.max())}, codebook_size {codebook_size}, "
            f"valid 0..{codebook_size - 1}); these tokens were not written by a model with this codebook"
        )


def load_token_parts(folder: str | os.PathLike) -> TokenFile:
    """Read the parts of a parallel encode (``encode_parallel.py``) as one :class:`TokenFile`, in file
    order; checks that ``index.json`` is complete and that every part agrees with it and with the others."""
    folder = Path(folder)
    index_path = folder / PARTS_INDEX
    if not index_path.is_file():
        raise FileNotFoundError(
            f"{folder} has no {PARTS_INDEX}: it is not a finished parallel encode (run the same "
            "`gaussquant encode ... --out` again to finish it)"
        )
    try:
        index = json.loads(index_path.read_text())
        entries = [(str(e["file"]), int(e["start"]), int(e["count"])) for e in index["parts"]]
        total, fingerprint = int(index["num_images"]), str(index["model_fingerprint"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{index_path} is not a gaussquant token-parts index ({err})") from None
    if index.get("format") != PARTS_FORMAT:
        raise ValueError(f"{index_path} is not a gaussquant token-parts index (format {index.get('format')!r})")
    parts, at = [], 0
    for name, start, count in entries:
        part = load_tokens(folder / name)
        if start != at or part.num_images != count or part.model_fingerprint != fingerprint:
            raise ValueError(f"{folder / name} does not match {index_path} (start, count or model); encode again")
        if parts and (part.codebook_size, part.grid, part.layout, part.image_size, part.tiling) != (
                parts[0].codebook_size, parts[0].grid, parts[0].layout, parts[0].image_size, parts[0].tiling):
            raise ValueError(f"{folder / name} has another token shape than {entries[0][0]}; encode again")
        parts.append(part)
        at += count
    if at != total or not parts:
        raise ValueError(f"{index_path} lists {at} images in its parts but announces {total}")
    first = parts[0]
    return TokenFile(
        indices=np.concatenate([p.indices for p in parts]), file_names=[n for p in parts for n in p.file_names],
        codebook_size=first.codebook_size, num_groups=first.num_groups, grid=first.grid,
        image_size=first.image_size, layout=first.layout, model_fingerprint=fingerprint, tiling=first.tiling,
    )
