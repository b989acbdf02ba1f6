"""The tokenizer bundled with the package (``gaussquant/pretrained_models/NAME/``; docs/demo_model.md).

A bundled model is a plain saved-model directory (``config.json`` + ``model.safetensors``) of a Gaussian VAE
trained with TDC by ``gaussquant train --preset NAME``; its weights are stored in float16 to keep the wheel
small (loading casts them back to float32; the difference is far below one uint8 level of output).

Every load and save of a model directory in the demo goes through :func:`load_model_dir` and
:func:`save_model_dir`, so a change of the pretrained API touches only these two functions.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

BUNDLED_MODEL = "unet-demo-gq"


def load_model_dir(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """``(Autoencoder in eval mode on CPU, its config.json dict)`` from a saved-model or run directory."""
    from gaussquant.pretrained import from_pretrained

    return from_pretrained(path)


def save_model_dir(model: nn.Module, path: str | Path, *, model_config: Any, bottleneck_config: Any,
                   extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` as a saved-model directory (``config.json`` + ``model.safetensors``)."""
    from gaussquant.pretrained import save_pretrained

    return save_pretrained(model, path, model_config=model_config, bottleneck_config=bottleneck_config,
                           extra=extra)


def bundled_dir(name: str = BUNDLED_MODEL) -> Path:
    """The installed directory of bundled model ``name`` (FileNotFoundError naming the ones present)."""
    root = Path(str(importlib.resources.files("gaussquant") / "pretrained_models"))
    path = root / name
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        present = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise FileNotFoundError(
            f"bundled model {name!r} is not installed (found: {present or 'none'}); reinstall the package "
            "(pip install -e .) so that its pretrained_models/ data files are present"
        )
    return path


def load_bundled(name: str = BUNDLED_MODEL) -> tuple[nn.Module, dict[str, Any]]:
    """The bundled Gaussian VAE ``name``: ``(Autoencoder in eval mode, float32, on CPU; config dict)``."""
    return load_model_dir(bundled_dir(name))


def export_bundled(source: str | Path, out: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
    """Copy a trained model (run dir, checkpoint step dir or saved dir) to ``out`` with float16 weights.

    Keeps the model and bottleneck sections of its ``config.json``, adds ``extra`` (e.g. the training
    command and metrics) and ``"weights_dtype": "float16"``.
    """
    from gaussquant.models.presets import ModelConfig
    from gaussquant.quantizers.build import bottleneck_config_from_dict

    model, meta = load_model_dir(source)
    info = {"weights_dtype": "float16", "source_step": meta.get("step"), **(extra or {})}
    return save_model_dir(
        model.to(torch.float16), out, model_config=ModelConfig(**meta["model"]),
        bottleneck_config=bottleneck_config_from_dict(dict(meta["bottleneck"])), extra=info,
    )
