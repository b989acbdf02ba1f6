"""Save and load trained autoencoders: ``config.json`` + ``model.safetensors`` (no pickle anywhere).

Layout of a saved model directory (also what every training checkpoint step directory contains)::

    config.json        {"format": "gaussquant-autoencoder", "version": 1,
                        "model": ModelConfig fields, "bottleneck": bottleneck config with "kind",
                        "bits_per_token": ... (discrete bottlenecks),
                        "codebook": {"method", "codebook_size", "codebook_dim", "seed", "fingerprint"} (GQ),
                        ... extra keys (a checkpoint adds "step" and the resolved training config "train")}
    model.safetensors  the Autoencoder state dict (TDC multipliers and GQ codebook buffers included)
    ema.safetensors    optional EMA weights (``use_ema=True``)

Loading is strict (design.md convention 3): missing or unexpected tensors, or a shape mismatch, is an error
that names a few of them; a truncated file is an error that says "truncated or corrupt".
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

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


def load_state_strict(module: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """``module.load_state_dict(state)`` after checking names and shapes; errors name a few offenders."""
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
    module.load_state_dict(state, strict=True)


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj


def describe_model(model: nn.Module, model_config: Any, bottleneck_config: Any) -> dict[str, Any]:
    """The ``config.json`` dict for ``model`` (format, version, model, bottleneck, rate, codebook spec)."""
    from gaussquant.quantizers.build import bottleneck_config_to_dict

    out: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "model": _plain(model_config),
        "bottleneck": _plain(bottleneck_config_to_dict(bottleneck_config)),
    }
    bottleneck = getattr(model, "bottleneck", None)
    if bottleneck is not None and getattr(bottleneck, "is_discrete", False):
        out["bits_per_token"] = float(bottleneck.bits_per_token)
    if type(bottleneck_config).__name__ == "GQConfig":
        out["codebook"] = _gq_codebook(model, bottleneck_config)
    return out


def _gq_codebook(model: nn.Module, cfg: Any) -> dict[str, Any]:
    """method.md section 4: the codebook spec plus the SHA-256 of the codebook the model actually holds."""
    from gaussquant.quantizers.codebooks import CodebookSpec, codebook_fingerprint

    spec = CodebookSpec(method=cfg.codebook_method, codebook_size=cfg.codebook_size,
                        codebook_dim=cfg.codebook_dim, seed=cfg.seed)
    held = getattr(model.bottleneck, "codebook", None)
    codebook = held if isinstance(held, Tensor) else spec.build()
    return {**spec.to_dict(), "fingerprint": codebook_fingerprint(codebook)}


def save_pretrained(
    model: nn.Module,
    directory: str | Path,
    *,
    model_config: Any,
    bottleneck_config: Any,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` for ``model`` into ``directory`` (created).

    Args:
        model: an Autoencoder (unwrapped; not DDP / compiled).
        model_config: its ModelConfig; ``bottleneck_config``: its bottleneck config dataclass.
        extra: more JSON-safe keys for config.json (must not clash with the standard ones).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = describe_model(model, model_config, bottleneck_config)
    for key, value in (extra or {}).items():
        if key in meta:
            raise ValueError(f"extra key {key!r} clashes with a standard config.json key")
        meta[key] = value
    save_state_safetensors(model.state_dict(), directory / "model.safetensors")
    fsync_write(directory / "config.json", json.dumps(meta, indent=2).encode())
    return directory


def resolve_model_dir(path: str | Path) -> Path:
    """A saved-model dir, a checkpoint step dir, or a run dir (-> its latest checkpoint)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{str(path)!r} does not exist")
    if (path / "config.json").is_file():
        return path
    latest = path / "checkpoints" / "latest"
    if latest.is_file():
        name = latest.read_text().strip()
        if not re.fullmatch(r"step_\d{8}", name):  # latest may not point outside its run folder
            raise ValueError(f"{str(latest)!r} names {name[:80]!r}, not a step directory of this run; pass a "
                             "checkpoint step directory instead")
        step_dir = path / "checkpoints" / name
        if not (step_dir / "config.json").is_file():
            raise FileNotFoundError(f"{str(latest)!r} names {step_dir.name!r}, which has no config.json")
        return step_dir
    raise FileNotFoundError(
        f"{str(path)!r} holds no config.json and no checkpoints/latest: pass a directory written by "
        "save_pretrained, a checkpoint step directory, or a training run directory"
    )


def read_model_config(directory: Path) -> dict[str, Any]:
    try:
        meta = json.loads((directory / "config.json").read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{str(directory / 'config.json')!r} is truncated or corrupt ({err})") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{str(directory / 'config.json')!r} is not a {FORMAT} config (format={meta.get('format')!r})")
    if meta.get("version") != VERSION:
        raise ValueError(f"config version {meta.get('version')!r} is not supported (this library reads {VERSION})")
    return meta


def _model_config(data: dict[str, Any]) -> Any:
    from gaussquant.models.presets import ModelConfig

    fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"config.json 'model' has unknown keys {unknown}; was it written by a newer version?")
    defaults = ModelConfig()
    kwargs = {
        k: tuple(v) if isinstance(v, list) and isinstance(getattr(defaults, k), tuple) else v
        for k, v in data.items()
    }
    return ModelConfig(**kwargs)


def from_pretrained(
    path: str | Path, *, map_location: str | torch.device = "cpu", use_ema: bool = False
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the Autoencoder saved at ``path`` and load its weights strictly.

    Args:
        path: a :func:`save_pretrained` directory, a checkpoint step directory, or a run directory.
        map_location: device for the weights and the model.
        use_ema: load ``ema.safetensors`` instead of ``model.safetensors`` (error if absent).

    Returns:
        ``(model in eval mode, config dict as in config.json)``.
    """
    from gaussquant.models.presets import build_autoencoder
    from gaussquant.quantizers.build import bottleneck_config_from_dict, build_bottleneck

    directory = resolve_model_dir(path)
    meta = read_model_config(directory)
    model_cfg = _model_config(meta["model"])
    bottleneck = build_bottleneck(bottleneck_config_from_dict(dict(meta["bottleneck"])))
    model = build_autoencoder(model_cfg, bottleneck)
    weights = directory / ("ema.safetensors" if use_ema else "model.safetensors")
    if use_ema and not weights.is_file():
        raise FileNotFoundError(f"{str(directory)!r} has no ema.safetensors (the run was trained without EMA)")
    load_state_strict(model, load_state_safetensors(weights), str(weights))
    return model.to(map_location).eval(), meta
