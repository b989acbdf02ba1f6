"""``config.json`` of a saved model: written from ``model.config``, read back with every field checked.

Layout (also the ``config.json`` of every training checkpoint step folder)::

    {"format": "gaussquant-autoencoder", "version": 1,
     "model": ModelConfig fields, "bottleneck": bottleneck config fields with "kind",
     "bits_per_token": G * log2 K (discrete bottlenecks), "bpp": bits per pixel,
     "codebook": {"method", "codebook_size", "codebook_dim", "seed", "fingerprint"} (GQ),
     "weights_sha256": {"model": SHA-256 of the state dict, see files.state_digest},
     ... extra keys ("metrics"; a checkpoint adds "step" and the training config "train";
         a conversion adds "conversion")}

A config that cannot be read (not UTF-8 JSON, not an object, a missing section, a wrong type) is a
ValueError of one sentence that names the file (issue 16, item 5).
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gaussquant.plain import to_plain as plain
from gaussquant.pretrained.files import state_digest

if TYPE_CHECKING:  # pragma: no cover
    from gaussquant.models.autoencoder import Autoencoder, AutoencoderConfig

FORMAT = "gaussquant-autoencoder"
VERSION = 1


def describe_model(model: "Autoencoder", *, digest: bool = True) -> dict[str, Any]:
    """The standard ``config.json`` keys for ``model``, from ``model.config`` (nothing passed in).

    ``digest``: also store the SHA-256 of ``model.state_dict()`` (checked on load).
    """
    from gaussquant.quantizers.build import bottleneck_config_to_dict

    config = model.config
    if config.model is None:
        raise ValueError(
            "this Autoencoder has no ModelConfig (it was assembled from a hand-built encoder and decoder), so it "
            "cannot be saved and rebuilt; build it with build_autoencoder(ModelConfig(...), bottleneck)"
        )
    out: dict[str, Any] = {"format": FORMAT, "version": VERSION, "model": plain(config.model),
                           "bottleneck": plain(bottleneck_config_to_dict(config.bottleneck))}
    bottleneck = model.bottleneck
    if bottleneck.is_discrete:
        out["bits_per_token"] = float(bottleneck.bits_per_token)
        out["bpp"] = float(bottleneck.bits_per_token) / model.downsample_factor**2
    if config.bottleneck.kind == "gq":
        out["codebook"] = _codebook_section(bottleneck)
    if digest:
        out["weights_sha256"] = {"model": state_digest(model.state_dict())}
    return out


def _codebook_section(quantizer: Any) -> dict[str, Any]:
    """docs/method.md section 4: the codebook spec plus the SHA-256 of the codebook the model actually holds."""
    spec = quantizer.spec.to_dict() if quantizer.spec is not None else {
        "method": "explicit", "codebook_size": quantizer.codebook_size, "codebook_dim": quantizer.codebook_dim}
    from gaussquant.quantizers.codebooks import codebook_fingerprint

    return {**spec, "fingerprint": codebook_fingerprint(quantizer.codebook)}


def read_model_config(directory: Path) -> dict[str, Any]:
    """Read and check ``directory/config.json``: a JSON object of this format and version, with a ``model``
    and a ``bottleneck`` object. Every failure is a ValueError naming the file."""
    path = directory / "config.json"
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{str(path)!r} is not a text JSON file (binary content); restore the config.json "
                         "written by save_pretrained") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{str(path)!r} is truncated or corrupt ({err})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{str(path)!r} holds a JSON {type(meta).__name__}, not the object save_pretrained "
                         "writes; restore the original config.json")
    if meta.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is not a {FORMAT} config (format={meta.get('format')!r})")
    if meta.get("version") != VERSION:
        raise ValueError(f"{str(path)!r} has config version {meta.get('version')!r}, which is not supported "
                         f"(this library reads {VERSION})")
    for section in ("model", "bottleneck"):
        if not isinstance(meta.get(section), dict):
            what = "is missing" if section not in meta else f"is a {type(meta[section]).__name__}, not an object"
            raise ValueError(f"{str(path)!r}: the {section!r} section {what}; restore the config.json written "
                             "by save_pretrained")
    return meta


def config_from_meta(meta: dict[str, Any], path: Path) -> "AutoencoderConfig":
    """The typed :class:`AutoencoderConfig` of a checked ``config.json`` dict (types checked per field)."""
    from gaussquant.models.autoencoder import AutoencoderConfig
    from gaussquant.models.presets import ModelConfig
    from gaussquant.quantizers.build import BOTTLENECK_CONFIGS, rename_old_keys

    data = dict(meta["bottleneck"])
    kind = data.pop("kind", None)
    if kind not in BOTTLENECK_CONFIGS:
        raise ValueError(f"{str(path)!r}: unknown bottleneck kind {kind!r}; valid kinds: {sorted(BOTTLENECK_CONFIGS)}")
    data = rename_old_keys(kind, data)  # configs saved before a key was renamed still load (with a warning)
    model = _typed(ModelConfig, meta["model"], "model", path)
    return AutoencoderConfig(model=model, bottleneck=_typed(BOTTLENECK_CONFIGS[kind], data, "bottleneck", path))


def _typed(cls: type, data: dict[str, Any], section: str, path: Path) -> Any:
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{str(path)!r}: the {section!r} section has unknown keys {unknown} (valid: {fields}); "
                         "was it written by a newer version?")
    kwargs = {}
    for name, value in data.items():
        if not _matches(value, hints[name]):
            raise ValueError(f"{str(path)!r}: {section}.{name} = {value!r} is not of type "
                             f"{_type_name(hints[name])}; restore the config.json written by save_pretrained")
        kwargs[name] = tuple(value) if isinstance(value, list) and _is_tuple(hints[name]) else value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{str(path)!r}: the {section!r} section is invalid ({err})") from None


def _matches(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a dataclass field type (int, float, bool, str, None, list/tuple, unions)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value) if args else isinstance(value, list)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True  # a type this checker does not know: the constructor checks it


def _is_tuple(hint: Any) -> bool:
    return typing.get_origin(hint) is tuple


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
