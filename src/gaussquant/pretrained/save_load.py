"""Save a model with everything it is, and rebuild it exactly: the code behind
``Autoencoder.save_pretrained`` / ``Autoencoder.from_pretrained``.

A saved model folder holds ``config.json`` (``config_json.py``), ``model.safetensors`` (the state dict: TDC
multipliers and the GQ codebook with its fingerprint included) and a model card ``README.md``
(``model_card.py``). A training checkpoint step folder has the same ``config.json`` and weights (plus
``ema.safetensors``, the training state, no card), so both load here.

Loading checks, each failure one sentence naming the file: config.json readable and typed; the weights file
present, complete, of the model's names, shapes and dtypes (float32), equal to the SHA-256 digest stored in
config.json; a GQ codebook equal to its recorded fingerprint.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from gaussquant.pretrained.config_json import config_from_meta, describe_model, plain, read_model_config
from gaussquant.pretrained.files import fsync_write, load_state_safetensors, load_state_strict, save_state_safetensors

if TYPE_CHECKING:  # pragma: no cover
    from gaussquant.models.autoencoder import Autoencoder


def save_model(model: "Autoencoder", directory: str | os.PathLike, *, extra: dict[str, Any] | None = None,
               metrics: dict[str, Any] | None = None, model_card: bool = True,
               repo_id: str | None = None) -> Path:
    """Write ``config.json``, ``model.safetensors`` and (``model_card``) ``README.md`` into ``directory``.

    Args:
        model: an Autoencoder built by ``build_autoencoder`` or ``to_gaussian_quant`` (unwrapped: not DDP or
            compiled); everything saved comes from ``model.config``.
        extra: more JSON-safe keys for config.json (may not clash with the standard ones).
        metrics: measured numbers (e.g. ``gaussquant.evaluate``'s result), stored as ``"metrics"``.
        repo_id: the Hub repo named in the model card's loading example (default: the folder).
    """
    directory = Path(directory)
    meta = describe_model(model)
    for key, value in {**(extra or {}), **({"metrics": metrics} if metrics is not None else {})}.items():
        if key in meta:
            raise ValueError(f"extra key {key!r} clashes with a standard config.json key")
        meta[key] = plain(value)
    text = json.dumps(meta, indent=2)  # fails here, before anything is written, if extra is not JSON-safe
    directory.mkdir(parents=True, exist_ok=True)
    save_state_safetensors(model.state_dict(), directory / "model.safetensors")
    fsync_write(directory / "config.json", text.encode())
    if model_card:
        from gaussquant.pretrained.model_card import render_model_card

        fsync_write(directory / "README.md", render_model_card(meta, repo_id or directory.name).encode())
    return directory


def resolve_model_dir(path: str | os.PathLike) -> Path:
    """A saved-model folder, a checkpoint step folder, or a run folder (-> its latest checkpoint)."""
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
        f"{str(path)!r} holds no config.json and no checkpoints/latest: pass a folder written by "
        "save_pretrained, a checkpoint step folder, or a training run folder"
    )


def load_model(path_or_repo_id: str | os.PathLike, *, map_location: str | torch.device = "cpu",
               use_ema: bool = False, revision: str | None = None, cache_dir: str | os.PathLike | None = None,
               token: str | bool | None = None, local_files_only: bool = False) -> "Autoencoder":
    """Rebuild the Autoencoder saved at ``path_or_repo_id`` (a local folder or a Hub repo id), strictly.

    Returns the model in eval mode on ``map_location``; ``model.metadata`` holds the config.json keys
    other than format, version, model and bottleneck (``step``, ``conversion``, ``metrics``, ...).
    """
    from gaussquant.reference_checkpoint import check_reference_source
    from gaussquant.models.presets import build_autoencoder
    from gaussquant.pretrained.hub import locate
    from gaussquant.quantizers.build import EXPLICIT_CODEBOOK, build_bottleneck

    folder = locate(path_or_repo_id, revision=revision, cache_dir=cache_dir, token=token,
                    local_files_only=local_files_only)
    directory = resolve_model_dir(folder)
    meta = read_model_config(directory)
    check_reference_source(meta)  # an imported reference model must keep its source's channel groups
    config = config_from_meta(meta, directory / "config.json")
    stem = "ema" if use_ema else "model"
    weights = directory / f"{stem}.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(
            f"{str(directory)!r} has no ema.safetensors (the run was trained without EMA)" if use_ema else
            f"{str(directory)!r} holds a config.json but no model.safetensors, so the save is incomplete; "
            "use another checkpoint step or save the model again"
        )
    state = load_state_safetensors(weights)
    digest = _stored_digest(meta, stem, directory)
    if meta.get("weights_dtype") is not None:  # stored in half precision on purpose (e.g. a bundled model)
        state, digest = upcast_stored_half(state, meta["weights_dtype"], str(weights), digest), None
    codebook = None
    if config.bottleneck.kind == "gq" and config.bottleneck.codebook_method == EXPLICIT_CODEBOOK:
        codebook = state.get("bottleneck.codebook")
        if codebook is None:
            raise ValueError(f"{str(weights)!r} holds no bottleneck.codebook, but its config.json says the "
                             "codebook is stored with the weights")
    try:
        model = build_autoencoder(config.model, build_bottleneck(config.bottleneck, codebook=codebook))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{str(directory / 'config.json')!r} describes a model that cannot be built ({err})") from None
    load_state_strict(model, state, str(weights), digest=digest)
    _check_codebook(model, meta, directory)
    model.metadata = {k: v for k, v in meta.items() if k not in ("format", "version", "model", "bottleneck")}
    return model.to(map_location).eval()


def upcast_stored_half(state: dict[str, torch.Tensor], dtype_name: Any, source: str,
                       digest: str | None) -> dict[str, torch.Tensor]:
    """Weights that ``config.json`` declares stored in ``float16``/``bfloat16`` (``"weights_dtype"``): check
    that every floating tensor has that dtype and (when given) the SHA-256 of the stored state, then return
    the state in float32. Undeclared half-precision weights stay an error (:func:`load_state_strict`)."""
    from gaussquant.pretrained.files import state_digest

    stored = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(dtype_name)
    if stored is None:
        raise ValueError(f"{source}: config.json says weights_dtype {dtype_name!r}; only 'float16' or 'bfloat16' "
                         "storage is supported (or leave the key out for float32)")
    wrong = [k for k, v in state.items() if v.is_floating_point() and v.dtype != stored]
    if wrong:
        raise ValueError(f"{source} should hold {dtype_name} weights (config.json weights_dtype), but "
                         f"{wrong[0]} is {state[wrong[0]].dtype}; the file does not belong to this config.json")
    if digest is not None and state_digest(state) != digest:
        raise ValueError(f"{source} does not match the SHA-256 stored in config.json: the file is damaged or "
                         "was changed; restore it or save the model again")
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def _stored_digest(meta: dict[str, Any], stem: str, directory: Path) -> str | None:
    stored = meta.get("weights_sha256")
    if stored is None:
        return None  # saved before digests were stored, or a checkpoint without one
    if not isinstance(stored, dict) or not isinstance(stored.get(stem, ""), str):
        raise ValueError(f"{str(directory / 'config.json')!r}: weights_sha256 must map file stems to hex digests")
    return stored.get(stem)


def _check_codebook(model: "Autoencoder", meta: dict[str, Any], directory: Path) -> None:
    """The loaded GQ codebook must be the one config.json names (its SHA-256 fingerprint)."""
    from gaussquant.quantizers.codebooks import codebook_fingerprint

    recorded = meta.get("codebook")
    if not isinstance(recorded, dict) or "fingerprint" not in recorded:
        return
    held = codebook_fingerprint(model.bottleneck.codebook)
    if recorded["fingerprint"] != held:
        raise ValueError(f"{str(directory / 'config.json')!r} names codebook fingerprint "
                         f"{str(recorded['fingerprint'])[:12]} but the weights hold {held[:12]}; the files do not "
                         "belong together: download or copy the model again")


# -- the module-level functions of earlier versions, kept as thin wrappers ----------------------------------
def save_pretrained(model: "Autoencoder", directory: str | os.PathLike, *, model_config: Any = None,
                    bottleneck_config: Any = None, extra: dict[str, Any] | None = None) -> Path:
    """``model.save_pretrained(directory, extra=extra)``. The optional configs are checked against
    ``model.config`` (a mismatch is an error: the model's own config is what gets saved)."""
    own = model.config
    for name, given, actual in (("model_config", model_config, own.model),
                                ("bottleneck_config", bottleneck_config, own.bottleneck)):
        if given is not None and given != actual:
            raise ValueError(f"{name}={given!r} differs from the model's own config {actual!r}; omit it: "
                             "model.save_pretrained(dir) saves what the model is")
    return save_model(model, directory, extra=extra)


def from_pretrained(path: str | os.PathLike, *, map_location: str | torch.device = "cpu",
                    use_ema: bool = False) -> tuple["Autoencoder", dict[str, Any]]:
    """``(Autoencoder.from_pretrained(path), its config.json as a dict)`` (the earlier tuple form)."""
    model = load_model(path, map_location=map_location, use_ema=use_ema)
    from gaussquant.quantizers.build import bottleneck_config_to_dict

    meta = {"model": plain(model.config.model), "bottleneck": bottleneck_config_to_dict(model.config.bottleneck),
            **model.metadata}
    return model, meta


__all__ = ["save_model", "load_model", "resolve_model_dir", "save_pretrained", "from_pretrained"]
