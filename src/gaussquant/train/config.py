"""Typed training configuration, YAML presets and ``--set key=value`` overrides.

The recipe's defaults follow docs/method.md section 7 (Adam, L1 + LPIPS over a learned log-variance, rate weight
0.1, hinge PatchGAN with the VQGAN adaptive weight x 0.75 from a start step). Every YAML preset maps 1:1 onto
these dataclasses: an unknown key is an error that names the key and its section.

Presets ship inside the package (``gaussquant/configs/NAME.yaml``) so that ``--preset NAME`` works from an
installed wheel too.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from gaussquant.data.config import DataConfig
from gaussquant.models.presets import ModelConfig
from gaussquant.plain import to_plain
from gaussquant.quantizers.build import (
    GaussianConfig,
    bottleneck_config_from_dict,
    bottleneck_config_to_dict,
)


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule (applied to generator and discriminator alike).

    ``schedule``: ``constant`` or ``cosine`` (to 0 at ``steps``), both after a linear warm-up of
    ``warmup_steps``. ``grad_clip``: max global grad norm, None = off. ``grad_accum``: micro-batches per
    optimiser step. ``disc_lr``: discriminator learning rate, None = ``lr``. ``betas``: Adam's defaults
    (0.9, 0.999), as the GQ reference trains (VQGAN's (0.5, 0.9) is one option away).
    """

    name: str = "adam"
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: str = "constant"
    grad_clip: float | None = None
    grad_accum: int = 1
    disc_lr: float | None = None


@dataclass
class DiscConfig:
    """PatchGAN discriminator size (models/discriminator.py). ``norm`` None = the model's default."""

    base_channels: int = 64
    n_layers: int = 3
    norm: str | None = None


@dataclass
class GanConfig:
    """Adversarial term. ``disc_start`` None = no discriminator at all (no forward, no optimiser).

    ``disc_start`` counts generator steps (this trainer's ``step``). The GQ reference alternates generator and
    discriminator batches and counts both, so its ``disc_start: 20001`` is generator step 10001 here (the
    paper presets use 10001).
    """

    disc_start: int | None = None
    disc_weight: float = 0.75
    adaptive_weight: bool = True
    disc: DiscConfig = field(default_factory=DiscConfig)


@dataclass
class LossConfig:
    """Objective weights (losses/objective.py).

    ``aux_weights``: weight per bottleneck loss name other than ``rate`` (``codebook``, ``commitment``,
    ``entropy``); names not listed get weight 1. ``perceptual_weights_dir``: where LPIPS looks for its
    weight files (None = the torch hub cache).
    """

    l1_weight: float = 1.0
    l2_weight: float = 0.0
    perceptual_weight: float = 0.0
    perceptual_net: str = "vgg"
    perceptual_weights_dir: str | None = None
    learned_logvar: bool = True
    rate_weight: float = 0.1
    aux_weights: dict[str, float] = field(default_factory=dict)
    gan: GanConfig = field(default_factory=GanConfig)


@dataclass
class TrainConfig:
    """Everything one training run needs; saved, resolved, as OUT/config.yaml and in every checkpoint.

    ``batch_size`` is per process and per micro-batch: the global batch of one optimiser step is
    ``batch_size * world_size * optim.grad_accum``. ``ema_decay`` None = no EMA weights. ``precision``:
    ``fp32`` or ``bf16`` (autocast; the bottleneck quantizes in fp32). ``device``: ``auto`` (CUDA when
    present), ``cpu`` or ``cuda``. ``init_from``: a trained model (save dir, checkpoint or run dir) whose
    matching weights start a new run (weights only; ignored when the run resumes from its own checkpoint).
    ``max_seconds``: wall-clock budget of one invocation (None = none): the loop stops at the first step
    boundary past it, whatever the step count, and saves a checkpoint. ``freeze``: top-level modules
    (``encoder``, ``bottleneck``, ``decoder``) whose parameters are not trained, e.g. ``[encoder]`` to fine-tune
    the decoder of a converted GQ model on its codewords while every token stays as it was.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    bottleneck: Any = field(default_factory=GaussianConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    steps: int = 1000
    batch_size: int = 8
    seed: int = 0
    out: str = "runs/train"
    log_every: int = 10
    image_every: int = 500
    ckpt_every: int = 500
    keep_last: int = 3
    ema_decay: float | None = None
    compile: bool = False
    precision: str = "fp32"
    device: str = "auto"
    init_from: str | None = None
    max_seconds: float | None = None
    freeze: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        validate(self)


FREEZABLE = ("encoder", "bottleneck", "decoder")


def validate(cfg: TrainConfig) -> None:
    """Raise ValueError naming the first inconsistent field."""
    checks = [
        (cfg.optim.name in ("adam", "adamw", "sgd"), f"optim.name must be adam, adamw or sgd, got {cfg.optim.name!r}"),
        (cfg.optim.schedule in ("constant", "cosine"),
         f"optim.schedule must be constant or cosine, got {cfg.optim.schedule!r}"),
        (cfg.optim.grad_accum >= 1, f"optim.grad_accum must be >= 1, got {cfg.optim.grad_accum}"),
        (cfg.optim.lr > 0, f"optim.lr must be > 0, got {cfg.optim.lr}"),
        (cfg.steps >= 1, f"steps must be >= 1, got {cfg.steps}"),
        (cfg.batch_size >= 1, f"batch_size must be >= 1, got {cfg.batch_size}"),
        (cfg.keep_last >= 1, f"keep_last must be >= 1, got {cfg.keep_last}"),
        (min(cfg.log_every, cfg.image_every, cfg.ckpt_every) >= 1,
         "log_every, image_every and ckpt_every must be >= 1"),
        (cfg.ema_decay is None or 0.0 < cfg.ema_decay < 1.0,
         f"ema_decay must be in (0, 1) or null, got {cfg.ema_decay}"),
        (cfg.precision in ("fp32", "bf16"), f"precision must be fp32 or bf16, got {cfg.precision!r}"),
        (cfg.max_seconds is None or cfg.max_seconds > 0, f"max_seconds must be > 0 or null, got {cfg.max_seconds}"),
        (set(cfg.freeze) <= set(FREEZABLE) and len(set(cfg.freeze)) < len(FREEZABLE),
         f"freeze takes some of {', '.join(FREEZABLE)} (not all), got {list(cfg.freeze)}"),
        (cfg.device in ("auto", "cpu", "cuda"), f"device must be auto, cpu or cuda, got {cfg.device!r}"),
        (cfg.loss.gan.disc_start is None or cfg.loss.gan.disc_start >= 0,
         f"loss.gan.disc_start must be >= 0 or null, got {cfg.loss.gan.disc_start}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


# ---------------------------------------------------------------- dict <-> dataclass, with coercion


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML value or a ``--set`` string to the field type ``tp``."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "~")):
            if len(args) < len(typing.get_args(tp)):
                return None
        return _coerce(value, args[0], where)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, str):
            value = yaml.safe_load(value)
        return _from_dict(tp, value, where)
    if isinstance(value, str) and tp in (tuple, list, dict) or origin in (tuple, list, dict):
        if isinstance(value, str):
            value = yaml.safe_load(value)
    try:
        if tp is bool:
            if isinstance(value, str):
                low = value.lower()
                if low not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                    raise ValueError(value)
                return low in ("true", "1", "yes", "on")
            if not isinstance(value, (bool, int)):
                raise ValueError(value)
            return bool(value)
        if tp is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if tp is float:
            return float(value)
        if tp is str:
            if not isinstance(value, (str, int, float)):
                raise ValueError(value)
            return str(value)
        if origin is tuple:
            args = typing.get_args(tp)
            items = list(value)
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(_coerce(v, args[0], where) for v in items)
            if len(items) != len(args):
                raise ValueError(value)
            return tuple(_coerce(v, a, where) for v, a in zip(items, args))
        if origin is list:
            (arg,) = typing.get_args(tp)
            return [_coerce(v, arg, where) for v in value]
        if origin is dict:
            _, varg = typing.get_args(tp)
            return {str(k): _coerce(v, varg, where) for k, v in dict(value).items()}
    except (TypeError, ValueError):
        raise ValueError(f"{where}: cannot read {value!r} as {tp}") from None
    return value


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _from_dict(cls: type, data: Any, section: str) -> Any:
    """Build dataclass ``cls`` from a mapping; unknown keys are an error naming key and section."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"section '{section}' must be a mapping, got {type(data).__name__}")
    types_ = _field_types(cls)
    unknown = sorted(set(data) - set(types_))
    if unknown:
        raise ValueError(
            f"unknown key '{unknown[0]}' in section '{section}' (known keys: {', '.join(sorted(types_))})"
        )
    kwargs = {}
    for name, value in data.items():
        where = f"{section}.{name}" if section != "<top>" else name
        if cls is TrainConfig and name == "bottleneck":
            kwargs[name] = _bottleneck_from(value, where)
        else:
            kwargs[name] = _coerce(value, types_[name], where)
    return cls(**kwargs)


def _bottleneck_from(value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(value):
        return value
    if not isinstance(value, dict) or "kind" not in value:
        raise ValueError(f"section '{where}' must be a mapping with a 'kind' (gaussian, gq, vq, fsq, ...)")
    try:
        return bottleneck_config_from_dict(dict(value))
    except (TypeError, KeyError) as err:
        raise ValueError(f"section '{where}': {err}") from None


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Build a :class:`TrainConfig` from a nested mapping (strict)."""
    return _from_dict(TrainConfig, data, "<top>")


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Plain nested dict (YAML/JSON-safe: tuples become lists) of a :class:`TrainConfig`."""
    out = to_plain(cfg)
    out["bottleneck"] = to_plain(bottleneck_config_to_dict(cfg.bottleneck))
    return out


# ---------------------------------------------------------------- presets, files, overrides


def preset_names() -> list[str]:
    """Names accepted by ``--preset`` (the YAML files shipped in ``gaussquant/configs``)."""
    root = importlib.resources.files("gaussquant") / "configs"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(path_or_preset: str | Path) -> dict[str, Any]:
    path = Path(path_or_preset)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"config file {str(path)!r} does not exist")
        text = path.read_text()
    else:
        res = importlib.resources.files("gaussquant") / "configs" / f"{path_or_preset}.yaml"
        if not res.is_file():
            raise ValueError(
                f"unknown preset {str(path_or_preset)!r}; available: {', '.join(preset_names())}"
            )
        text = res.read_text()
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ValueError(f"config {str(path_or_preset)!r} must be a YAML mapping at the top level")
    return data


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``a.b.c=value`` to a nested dict (the value is coerced later, by field type)."""
    key, sep, value = assignment.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set expects key=value, got {assignment!r}")
    parts = key.strip().split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ValueError(f"--set {key}: '{'.'.join(parts[: i + 1])}' is not a section")
        node = child
    node[parts[-1]] = value


def load_config(path_or_preset: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML file or a preset name, apply ``overrides`` (``a.b=c``) and return a typed config.

    Override values are strings coerced by the target field's type (``optim.lr=3e-4``,
    ``loss.gan.disc_start=null``, ``optim.betas=[0.9,0.99]``). Unknown keys are errors.
    """
    data = _read_yaml(path_or_preset)
    for assignment in overrides or []:
        apply_override(data, assignment)
    bneck = data.get("bottleneck")
    if isinstance(bneck, dict) and isinstance(bneck.get("kind"), str):
        # bottleneck fields come from --set as strings: coerce them by the chosen kind's field types
        proto = _bottleneck_from({"kind": bneck["kind"]}, "bottleneck")
        types_ = _field_types(type(proto))
        for name, value in list(bneck.items()):
            if name != "kind" and name in types_:
                bneck[name] = _coerce(value, types_[name], f"bottleneck.{name}")
    return config_from_dict(data)


def save_config_yaml(cfg: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (loadable again with :func:`load_config`)."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
