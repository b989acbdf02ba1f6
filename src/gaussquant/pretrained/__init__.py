"""Saved models: ``config.json`` + ``model.safetensors`` + a model card, locally or on the Hugging Face Hub.

The model-facing API is on the model itself: ``model.save_pretrained(dir)``, ``model.push_to_hub(repo_id)``
and ``Autoencoder.from_pretrained(dir_or_repo_id)``. This package holds the code behind them:

- ``files``: atomic safetensors writes, strict loads, the SHA-256 digest of a state dict;
- ``config_json``: the config.json format, written from ``model.config`` and read back with checks;
- ``save_load``: save / load a model folder (and the module-level ``save_pretrained`` / ``from_pretrained``
  of earlier versions, kept as thin wrappers);
- ``model_card``: the README.md of a saved model;
- ``hub``: Hugging Face Hub download and upload (optional ``hub`` extra).
"""

from __future__ import annotations

from gaussquant.pretrained.config_json import FORMAT, VERSION, describe_model, read_model_config
from gaussquant.pretrained.files import (
    fsync_file,
    fsync_write,
    load_state_safetensors,
    load_state_strict,
    save_state_safetensors,
    state_digest,
)
from gaussquant.pretrained.save_load import from_pretrained, load_model, resolve_model_dir, save_model, save_pretrained

__all__ = [
    "FORMAT", "VERSION", "describe_model", "read_model_config", "fsync_file", "fsync_write",
    "load_state_safetensors", "load_state_strict", "save_state_safetensors", "state_digest",
    "from_pretrained", "load_model", "resolve_model_dir", "save_model", "save_pretrained",
]
