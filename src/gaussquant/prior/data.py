"""Token files as sequences for the prior: raster order, class labels from folder names, layout checks.

A tokens file (``gaussquant.tokens``) stores channel-first grids ``(N, G, h, w)`` or token-last sequences
``(N, L, G)``. The prior always sees ``(N, L, G)`` with positions in raster order (row by row, left to right;
L = h * w), and :meth:`TokenLayout.from_sequences` turns sampled sequences back into the file's layout.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gaussquant.tokens import TokenFile


@dataclass(frozen=True)
class TokenLayout:
    """What a prior was trained on: the token file's codebook, groups, grid, layout and tokenizer fingerprint."""

    codebook_size: int
    num_groups: int
    grid: tuple[int, ...]
    layout: str
    image_size: tuple[int, int]
    model_fingerprint: str

    @classmethod
    def of(cls, tokens: TokenFile) -> "TokenLayout":
        return cls(codebook_size=tokens.codebook_size, num_groups=tokens.num_groups, grid=tuple(tokens.grid),
                   layout=tokens.layout, image_size=tuple(tokens.image_size),
                   model_fingerprint=tokens.model_fingerprint)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TokenLayout":
        return cls(codebook_size=int(data["codebook_size"]), num_groups=int(data["num_groups"]),
                   grid=tuple(int(v) for v in data["grid"]), layout=str(data["layout"]),
                   image_size=tuple(int(v) for v in data["image_size"]),
                   model_fingerprint=str(data["model_fingerprint"]))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["grid"], data["image_size"] = list(self.grid), list(self.image_size)
        return data

    @property
    def seq_len(self) -> int:
        """L: token positions per image."""
        return int(np.prod(self.grid))

    @property
    def bits_per_token(self) -> float:
        """The rate, G * log2 K bits per position (docs/method.md section 2)."""
        return self.num_groups * float(np.log2(self.codebook_size))

    @property
    def pixels(self) -> int:
        return int(self.image_size[0] * self.image_size[1])

    def to_sequences(self, indices: np.ndarray | Tensor) -> Tensor:
        """File-layout indices ``(N, G, h, w)`` or ``(N, L, G)`` -> ``(N, L, G)`` int64, raster order."""
        x = torch.as_tensor(np.asarray(indices).astype(np.int64)) if not isinstance(indices, Tensor) else indices.long()
        if self.layout == "channel_first":
            return x.flatten(2).transpose(1, 2).contiguous()  # (N, G, h*w) -> (N, L, G)
        return x.contiguous()

    def from_sequences(self, sequences: Tensor) -> Tensor:
        """``(N, L, G)`` -> the file's layout (``(N, G, h, w)`` or ``(N, L, G)``)."""
        if self.layout == "channel_first":
            n = sequences.shape[0]
            return sequences.transpose(1, 2).reshape(n, self.num_groups, *self.grid).contiguous()
        return sequences.contiguous()

    def check_same(self, other: "TokenLayout", what: str) -> None:
        """Raise ValueError unless ``other`` (read from ``what``) holds the same kind of tokens as ``self``."""
        if other.model_fingerprint != self.model_fingerprint:
            raise ValueError(
                f"{what} was written by a different tokenizer (fingerprint {other.model_fingerprint[:12]}...) than "
                f"the tokens this prior was trained on ({self.model_fingerprint[:12]}...); use tokens from the "
                "same tokenizer"
            )
        mine, theirs = self.to_dict(), other.to_dict()
        diff = [k for k in mine if mine[k] != theirs[k]]
        if diff:
            raise ValueError(f"{what} differs from the prior's tokens in {', '.join(diff)} "
                             f"({', '.join(f'{theirs[k]} vs {mine[k]}' for k in diff)}); use matching tokens")


def class_names_of(file_names: list[str]) -> list[str]:
    """Sorted class names: the first folder of each file name (``"7/img3.png"`` -> ``"7"``)."""
    names = set()
    for name in file_names:
        parts = PurePosixPath(name).parts
        if len(parts) < 2:
            raise ValueError(
                f"cannot read a class label from {name!r}: with --class-from-folders every image must sit in a "
                "class sub-folder (IMAGES/CLASS/file.png) when it is encoded"
            )
        names.add(parts[0])
    if len(names) < 2:
        raise ValueError(f"--class-from-folders found only {len(names)} class folder(s); it needs at least 2")
    return sorted(names)


def class_labels(file_names: list[str], class_names: list[str]) -> Tensor:
    """``(N,)`` int64 label of each file: the index of its first folder in ``class_names``."""
    lookup = {name: i for i, name in enumerate(class_names)}
    labels = []
    for name in file_names:
        parts = PurePosixPath(name).parts
        if len(parts) < 2 or parts[0] not in lookup:
            raise ValueError(f"{name!r} is not in one of the prior's class folders {class_names[:10]}")
        labels.append(lookup[parts[0]])
    return torch.tensor(labels, dtype=torch.long)
