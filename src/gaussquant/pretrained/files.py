"""Weight files: atomic safetensors writes, strict loads, and the SHA-256 digest of a state dict.

Loading is strict (never ``strict=False``): missing or unexpected tensors, a shape mismatch or a dtype
mismatch is an error that names a few of them; a truncated file is an error that says "truncated or corrupt".
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

FORMAT = "gaussquant-autoencoder"
VERSION = 1


def fsync_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same directory, fsync, rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def save_state_safetensors(state: dict[str, Tensor], path: Path) -> None:
    """Save a state dict (each tensor copied to CPU, contiguous and unshared), atomically."""
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file(tensors, str(tmp))
    fsync_file(tmp)
    os.replace(tmp, path)


def load_state_safetensors(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Load a safetensors file; a missing, truncated or corrupt file is a clear error."""
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    try:
        return load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"weights file {str(path)!r} is truncated or corrupt ({err})") from None


def state_digest(state: dict[str, Tensor]) -> str:
    """SHA-256 over a state dict: every tensor's name, dtype, shape and raw bytes, in name order.

    It depends on the tensors only (not on how a file encodes them), so the same digest checks a
    ``model.safetensors`` written by ``save_pretrained`` or by a training checkpoint.
    """
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{str(tensor.dtype)}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def check_digest(state: dict[str, Tensor], expected: str, path: Path) -> None:
    """Raise a ValueError naming ``path`` unless ``state_digest(state) == expected``."""
    if state_digest(state) != expected:
        raise ValueError(
            f"weights file {str(path)!r} does not match the SHA-256 stored in its config.json (it was changed "
            "or damaged after saving); download or copy the model again"
        )


def load_state_strict(module: nn.Module, state: dict[str, Tensor], source: str, *, digest: str | None = None) -> None:
    """``module.load_state_dict(state)`` after checking names, shapes, dtypes and (when given) the SHA-256
    ``digest`` of the state (:func:`state_digest`); errors name the file and a few offenders."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if tuple(own[k].shape) != tuple(state[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (e.g. {'; '.join(shapes[:3])})")
        raise ValueError(
            f"{source} was saved from another architecture: {'; '.join(parts)}. "
            "Build the model from the config saved with these weights."
        )
    dtypes = [f"{k} is {state[k].dtype}" for k in sorted(own)
              if own[k].is_floating_point() and state[k].dtype != own[k].dtype]
    if dtypes:
        raise ValueError(
            f"{source} holds weights of another dtype than this model's {_dtype_of(own)} ({len(dtypes)} tensors, "
            f"e.g. {'; '.join(dtypes[:3])}); gaussquant stores float32 weights: re-save the model in float32 "
            "(model.float().save_pretrained(dir))"
        )
    if digest is not None:
        check_digest(state, digest, Path(source))
    module.load_state_dict(state, strict=True)


def _dtype_of(state: dict[str, Tensor]) -> str:
    return next((str(t.dtype) for t in state.values() if t.is_floating_point()), "float32")
