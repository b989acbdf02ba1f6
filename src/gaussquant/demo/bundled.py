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

from torch import nn

BUNDLED_MODEL = "unet-demo-gq"


def load_model_dir(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """``(Autoencoder in eval mode on CPU, its config.json dict)`` from a saved-model or run directory."""
    from gaussquant.pretrained import from_pretrained

    return from_pretrained(path)


def save_model_dir(model: nn.Module, path: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` as a saved-model directory (its own ``model.config`` says what it is)."""
    return model.save_pretrained(path, extra=extra)


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


def export_bundled(source: str | Path, out: str | Path, *, decoder_from: str | Path | None = None,
                   tile: int | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Copy a trained model (run dir, checkpoint step dir or saved dir) to ``out`` with float16 weights.

    ``decoder_from``: a model of the same architecture whose decoder replaces the source's, e.g. the
    stage-2 run of preset ``unet-demo-gq-dec`` (the decoder fine-tuned on GQ codewords, encoder frozen); the
    exported model stays the source's Gaussian VAE, so it converts to GQ at any K as before. ``tile``: the
    window the exported model recommends for encode/decode (``model.tile`` of its config; None keeps the
    source's).
    ``config.json`` keeps what the model is, adds ``extra`` (e.g. the training command and metrics) and
    ``"weights_dtype": "float16"``, and its ``weights_sha256`` is the digest of the float16 file, so
    ``from_pretrained`` checks the stored bytes and loads them back as float32.
    """
    import json

    from gaussquant.pretrained.files import fsync_write, save_state_safetensors, state_digest

    import dataclasses

    model, meta = load_model_dir(source)
    if decoder_from is not None:
        other, _ = load_model_dir(decoder_from)
        if dataclasses.replace(other.config.model, tile=None) != dataclasses.replace(model.config.model, tile=None):
            raise ValueError(f"decoder_from {str(decoder_from)!r} is a {other.config.model.arch} model with another "
                             f"configuration than {str(source)!r}; give a fine-tune of the same architecture")
        model.decoder.load_state_dict(other.decoder.state_dict())
    if tile is not None:
        model.model_config = dataclasses.replace(model.model_config, tile=tile)
    # no model card: its digest would be the float32 file's, and a bundled model loads with load_bundled()
    out = Path(model.save_pretrained(out, model_card=False, extra={
        "weights_dtype": "float16", "source_step": meta.get("source_step", meta.get("step")), **(extra or {})}))
    half = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    save_state_safetensors(half, out / "model.safetensors")
    config = json.loads((out / "config.json").read_text())
    config["weights_sha256"] = {"model": state_digest(half)}
    fsync_write(out / "config.json", json.dumps(config, indent=2).encode())
    return out
