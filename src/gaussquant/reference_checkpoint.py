"""Import the GQ reference's released checkpoints as GQ VQ-VAEs (docs/method.md, "Deliberate differences").

``gaussquant import-reference CKPT --config NAME --out DIR`` (Python: :func:`import_reference`) reads one of
the reference's PyTorch Lightning checkpoints (``sd3unet_gq_0.25.ckpt``, ...) for one of its configs
(``REFERENCE_CONFIGS``: its UNet and ViT GQ configs at 0.25, 0.5 and 1.0 bpp) and writes a
``save_pretrained`` directory: the paper preset that mirrors the config, converted to GQ (the reference's
Sobol codebook, K = 2^16, seed 42, its strided channel groups), with the file's encoder and decoder tensors
unchanged and the codebook fingerprint in ``config.json``.

Loading never runs code from the file. A ``.ckpt`` is a pickle; it is read by ``torch.load`` with a
restricted unpickler in place of ``pickle``'s: tensors, torch sizes / dtypes / devices and plain containers
are rebuilt; a few classes that Lightning checkpoints carry as metadata (omegaconf configs, paths, argparse
namespaces, numpy scalars) are replaced by an inert placeholder that is never constructed from the file;
any other global (``os.system``, ``builtins.eval``, a ``__reduce__`` of some class) makes the whole file an
error before it could be called.

Mapping: ``state_dict["encoder.*"]`` -> the model's encoder, ``state_dict["decoder.*"]`` -> its decoder, every
name and shape checked; the learned log-variance ``loss.logvar`` (not part of an autoencoder here) is kept
in ``config.json`` under ``reference.learned_logvar``; the discriminator and LPIPS weights under ``loss.``
and the optimizer states are not imported. The file's own ``global_step`` and ``epoch`` are recorded too.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import shutil
import types
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

if TYPE_CHECKING:  # pragma: no cover
    from gaussquant.models.autoencoder import Autoencoder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReferenceConfig:
    """One of the reference's GQ configs: its name, the paper preset mirroring it, and its regulariser.

    ``group``: the reference's ``group``, channels per codebook group (d); its channel groups are strided
    (group g holds channels {g, g + G, ...}); ``codebook_size``: its ``n_samples``; ``seed``: its Sobol seed.
    """

    name: str
    preset: str
    group: int
    codebook_size: int = 2**16
    seed: int = 42
    grouping: str = "strided"


REFERENCE_CONFIGS: dict[str, ReferenceConfig] = {c.name: c for c in (
    ReferenceConfig("sd3unet_gq_0.25", "unet-paper-gq-0.25bpp", 16),
    ReferenceConfig("sd3unet_gq_0.50", "unet-paper-gq-0.5bpp", 8),
    ReferenceConfig("sd3unet_gq_1.00", "unet-paper-gq-1.0bpp", 4),
    ReferenceConfig("bsqvit_gq_0.25", "vit-paper-gq-0.25bpp", 16),
    ReferenceConfig("bsqvit_gq_0.50", "vit-paper-gq-0.5bpp", 8),
    ReferenceConfig("bsqvit_gq_1.00", "vit-paper-gq-1.0bpp", 4),
)}


class UnsafeCheckpointError(ValueError):
    """The file refers to a callable that unpickling would run."""


# ---------------------------------------------------------------- loading without running code

_REBUILD = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
}
# metadata Lightning checkpoints carry beside the weights: replaced by the placeholder, never constructed
_INERT_MODULES = ("omegaconf", "pathlib", "argparse", "numpy", "lightning", "pytorch_lightning", "lightning_fabric")
_INERT_GLOBALS = {("copyreg", "_reconstructor"), ("_codecs", "encode")}


class Skipped:
    """Stands for a metadata object of a class the restricted unpickler does not rebuild. Holds nothing."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Skipped:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Iterable[Any]) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass


class _RestrictedUnpickler(pickle.Unpickler):
    """``find_class`` returns tensor rebuilders, plain containers or :class:`Skipped`; anything else raises."""

    inert: frozenset[str] = frozenset()  # "module.name" globals the caller also accepts as metadata
    source: str = "the checkpoint"

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _REBUILD:
            return _REBUILD[(module, name)]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if (module.split(".")[0] in _INERT_MODULES or (module, name) in _INERT_GLOBALS
                or f"{module}.{name}" in self.inert):
            return Skipped
        raise UnsafeCheckpointError(
            f"{self.source} refers to {module}.{name}, which unpickling would call: the file carries code, so "
            "it was refused before anything in it ran (use --skip-global MODULE.NAME only for metadata you trust)"
        )


def _restricted_pickle_module(source: str, inert: Iterable[str]) -> types.SimpleNamespace:
    """A stand-in for the ``pickle`` module whose ``Unpickler`` and ``load`` are restricted."""
    unpickler = type("RestrictedUnpickler", (_RestrictedUnpickler,), {"inert": frozenset(inert), "source": source})

    def load(file: Any, **kwargs: Any) -> Any:
        return unpickler(file, **kwargs).load()

    return types.SimpleNamespace(__name__="gaussquant.restricted_pickle", Unpickler=unpickler, load=load)


def load_reference_checkpoint(path: str | Path, *, skip_globals: Iterable[str] = ()) -> dict[str, Any]:
    """The checkpoint's top-level dict, read without running code from it (see the module docstring).

    Raises:
        FileNotFoundError: no such file. UnsafeCheckpointError: the file refers to a callable.
        ValueError: the file is truncated or not a PyTorch checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    module = _restricted_pickle_module(f"checkpoint {str(path)!r}", skip_globals)
    try:
        # weights_only=False only because torch refuses a custom pickle_module otherwise: the restricted
        # unpickler above is the only one this load uses.
        data = torch.load(path, map_location="cpu", pickle_module=module, weights_only=False)
    except UnsafeCheckpointError:
        raise
    except Exception as err:  # zip, pickle and storage errors all mean the same thing to the user
        raise ValueError(f"checkpoint {str(path)!r} is truncated or not a PyTorch checkpoint "
                         f"({type(err).__name__}: {err}); download it again") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("state_dict"), Mapping):
        raise ValueError(f"checkpoint {str(path)!r} has no 'state_dict' mapping: it is not a Lightning "
                         "checkpoint of the GQ reference")
    return dict(data)


# ---------------------------------------------------------------- mapping onto the preset


def _sub_state(state: Mapping[str, Any], prefix: str, source: str) -> dict[str, Tensor]:
    out = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    bad = [k for k, v in out.items() if not isinstance(v, Tensor)]
    if bad:
        raise ValueError(f"{source}: {prefix}{bad[0]} is not a tensor; the file is not a checkpoint of the reference")
    return out


def check_names_and_shapes(module: nn.Module, state: Mapping[str, Tensor], what: str) -> None:
    """Every name and shape of ``module``'s state dict equals ``state``'s, else one sentence naming a few."""
    own = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in state.items()}
    missing, unexpected = sorted(set(own) - set(theirs)), sorted(set(theirs) - set(own))
    shapes = [f"{k} {theirs[k]} vs {own[k]}" for k in sorted(set(own) & set(theirs)) if own[k] != theirs[k]]
    if missing or unexpected or shapes:
        parts = [f"{len(missing)} missing (e.g. {', '.join(missing[:3])})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})" if unexpected else "",
                 f"{len(shapes)} of another shape (e.g. {'; '.join(shapes[:3])})" if shapes else ""]
        raise ValueError(f"{what} does not match: {', '.join(p for p in parts if p)}; the file belongs to "
                         "another config or architecture")


def _check_hyper_parameters(ckpt: Mapping[str, Any], cfg: ReferenceConfig, source: str) -> None:
    """When the file records its regulariser (Lightning ``hyper_parameters``), it must be ``cfg``'s."""
    hp = ckpt.get("hyper_parameters")
    reg = hp.get("regularizer_config") if isinstance(hp, Mapping) else None
    if not isinstance(reg, Mapping):
        return  # the reference's LightningModule saves none: the config name is the user's word
    target, params = reg.get("target"), reg.get("params")
    if isinstance(target, str) and not target.endswith("GaussianQuantRegularizer"):
        raise ValueError(f"{source} was trained with {target}, not the GQ regulariser of {cfg.name}")
    group = params.get("group") if isinstance(params, Mapping) else None
    if group is not None and group != cfg.group:
        raise ValueError(f"{source} was trained with group {group}, but {cfg.name} has group {cfg.group}: "
                         f"it belongs to another config; pass its own --config")


def _preset_configs(cfg: ReferenceConfig) -> tuple[Any, Any]:
    """(ModelConfig, GQConfig) of the paper preset mirroring ``cfg``; its grouping must be the reference's."""
    from gaussquant.quantizers.build import GaussianConfig, GQConfig
    from gaussquant.train.config import load_config

    train_cfg = load_config(cfg.preset)
    g = train_cfg.bottleneck
    if not isinstance(g, GaussianConfig) or g.codebook_dim != cfg.group or g.grouping != cfg.grouping:
        raise ValueError(f"preset {cfg.preset} has groups of d={getattr(g, 'codebook_dim', None)} "
                         f"{getattr(g, 'grouping', None)}, but the reference's {cfg.name} groups channels "
                         f"{cfg.grouping} with d={cfg.group}: its weights would load with the wrong groups")
    gq = GQConfig(latent_channels=g.latent_channels, codebook_size=cfg.codebook_size, codebook_dim=g.codebook_dim,
                  codebook_method="sobol", seed=cfg.seed, grouping=g.grouping, target_bits=g.target_bits)
    return train_cfg.model, gq


def check_reference_source(meta: Mapping[str, Any]) -> None:
    """A saved model imported from a reference config must still group channels as that config does."""
    ref = meta.get("reference")
    if not isinstance(ref, Mapping) or ref.get("config") not in REFERENCE_CONFIGS:
        return
    cfg = REFERENCE_CONFIGS[ref["config"]]
    b = meta.get("bottleneck") or {}
    d = b.get("codebook_dim", b.get("group_dim"))
    if b.get("grouping") != cfg.grouping or d != cfg.group:
        raise ValueError(f"this model was imported from the reference's {cfg.name}, which groups channels "
                         f"{cfg.grouping} with d={cfg.group}, but its config.json says {b.get('grouping')} with "
                         f"d={d}: it would decode with the wrong groups; import it again")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _save(model: "Autoencoder", directory: Path, extra: dict[str, Any]) -> None:
    """Save the imported model; its ``model.config`` says what it is (paper preset + GQ bottleneck)."""
    model.save_pretrained(directory, extra=extra)


def import_reference(
    checkpoint: str | Path,
    config: str,
    out: str | Path,
    *,
    skip_globals: Iterable[str] = (),
    model_config: Any | None = None,
) -> Path:
    """Turn the reference's ``checkpoint`` of reference config ``config`` into a saved GQ model in ``out``.

    Args:
        checkpoint: the reference's ``.ckpt`` (a Lightning checkpoint).
        config: a key of ``REFERENCE_CONFIGS`` (``sd3unet_gq_0.25``, ..., ``bsqvit_gq_1.00``).
        out: the directory to create (must not exist yet); nothing is written there on any error.
        skip_globals: more ``module.name`` metadata classes to replace by :class:`Skipped` (never run).
        model_config: the architecture to map onto (default: the mirroring preset's; tests use small widths).
    Returns:
        ``out``, holding ``config.json`` (with the codebook fingerprint and ``reference``) and the weights.
    """
    from gaussquant.models.autoencoder import Autoencoder
    from gaussquant.models.presets import build_encoder_decoder
    from gaussquant.quantizers.build import build_bottleneck

    if config not in REFERENCE_CONFIGS:
        raise ValueError(f"unknown reference config {config!r}; choose one of {', '.join(REFERENCE_CONFIGS)}")
    cfg, out, checkpoint = REFERENCE_CONFIGS[config], Path(out), Path(checkpoint)
    if out.exists():
        raise FileExistsError(f"{str(out)!r} already exists; choose a new --out directory")
    preset_model, gq_cfg = _preset_configs(cfg)
    model_cfg = preset_model if model_config is None else model_config
    ckpt = load_reference_checkpoint(checkpoint, skip_globals=skip_globals)
    source = f"checkpoint {str(checkpoint)!r}"
    _check_hyper_parameters(ckpt, cfg, source)
    state = ckpt["state_dict"]
    bottleneck = build_bottleneck(gq_cfg)
    with torch.device("meta"):  # shapes only: the file's tensors are assigned below
        encoder, decoder = build_encoder_decoder(model_cfg, bottleneck.in_channels, bottleneck.latent_channels)
    for module, prefix in ((encoder, "encoder."), (decoder, "decoder.")):
        sub = _sub_state(state, prefix, source)
        check_names_and_shapes(module, sub, f"the {prefix[:-1]} of {source} against {config} ({model_cfg.arch})")
        module.load_state_dict(sub, strict=True, assign=True)
    model = Autoencoder(encoder, bottleneck, decoder, convert_grayscale=model_cfg.convert_grayscale,
                        model_config=model_cfg).eval()
    logvar = state.get("loss.logvar")
    extra = {"reference": {
        "config": cfg.name, "preset": cfg.preset, "file": checkpoint.name, "sha256": _sha256(checkpoint),
        "global_step": ckpt.get("global_step") if isinstance(ckpt.get("global_step"), int) else None,
        "epoch": ckpt.get("epoch") if isinstance(ckpt.get("epoch"), int) else None,
        "learned_logvar": float(logvar) if isinstance(logvar, Tensor) and logvar.numel() == 1 else None,
        "grouping": cfg.grouping, "codebook_dim": cfg.group,
    }}
    tmp = out.with_name(f".{out.name}.importing")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _save(model, tmp, extra)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("imported %s (%s) into %s", checkpoint, cfg.name, out)
    return out
