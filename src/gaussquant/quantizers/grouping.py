"""Which latent channels form a group (docs/method.md section 2).

C channels per token are split into G = C / d groups of d channels, each quantized to one index:

- ``contiguous`` (default for new models): group g holds channels [g*d, (g+1)*d);
- ``strided`` (the reference's main class, needed to load its checkpoints): group g holds channels
  {g, g+G, g+2G, ...}.

All helpers work on channel-last tensors ``(..., C)`` <-> ``(..., G, d)``.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["GROUPINGS", "check_grouping", "to_groups", "from_groups"]

GROUPINGS = ("contiguous", "strided")


def check_grouping(latent_channels: int, codebook_dim: int, grouping: str) -> int:
    """Validate (C, d, grouping) and return the number of groups G = C / d."""
    if isinstance(latent_channels, bool) or not isinstance(latent_channels, int) or latent_channels < 1:
        raise ValueError(f"latent_channels must be a positive integer; got {latent_channels!r}")
    if isinstance(codebook_dim, bool) or not isinstance(codebook_dim, int) or codebook_dim < 1:
        raise ValueError(f"codebook_dim (group size d) must be a positive integer; got {codebook_dim!r}")
    if latent_channels % codebook_dim:
        raise ValueError(
            f"codebook_dim d={codebook_dim} must divide latent_channels C={latent_channels} "
            f"(valid d: {[x for x in range(1, latent_channels + 1) if latent_channels % x == 0]})"
        )
    if grouping not in GROUPINGS:
        raise ValueError(f"grouping must be one of {GROUPINGS}; got {grouping!r}")
    return latent_channels // codebook_dim


def to_groups(x: Tensor, codebook_dim: int, grouping: str) -> Tensor:
    """Channel-last ``(..., C)`` -> ``(..., G, d)`` (a view where possible); d must divide C."""
    if codebook_dim < 1 or x.shape[-1] % codebook_dim:
        raise ValueError(f"codebook_dim {codebook_dim} must divide the {x.shape[-1]} latent channels")
    num_groups = x.shape[-1] // codebook_dim
    if grouping == "contiguous":
        return x.unflatten(-1, (num_groups, codebook_dim))
    if grouping == "strided":
        return x.unflatten(-1, (codebook_dim, num_groups)).transpose(-1, -2)
    raise ValueError(f"grouping must be one of {GROUPINGS}; got {grouping!r}")


def from_groups(x: Tensor, grouping: str) -> Tensor:
    """Inverse of :func:`to_groups`: ``(..., G, d)`` -> ``(..., C)``."""
    if grouping == "contiguous":
        return x.flatten(-2)
    if grouping == "strided":
        return x.transpose(-1, -2).flatten(-2)
    raise ValueError(f"grouping must be one of {GROUPINGS}; got {grouping!r}")
