"""Typed configs for every bottleneck and the one builder that picks the class by config type (design.md 1).

Each config is a dataclass with a class-level ``kind`` name; ``bottleneck_config_from_dict`` /
``bottleneck_config_to_dict`` convert to and from plain dicts (YAML presets) with strict key checking, and
``build_bottleneck`` constructs the module. Defaults live here and in the constructors they mirror
(method.md sections 2-4 for Gaussian / GQ, section 6 for the baselines).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from gaussquant.quantizers.base import Bottleneck


@dataclass
class GaussianConfig:
    """Gaussian VAE bottleneck (TDC when ``target_bits`` is set, fixed ``kl_weight`` otherwise).

    ``factor``: the TDC multipliers' step f (method.md section 3: 1.01; short CPU runs use a larger one so
    that lambda can move far enough within a few hundred steps).
    """

    kind: ClassVar[str] = "gaussian"
    latent_channels: int = 16
    group_dim: int = 16
    target_bits: float | None = 16.0
    kl_weight: float | None = None
    grouping: str = "contiguous"
    factor: float = 1.01
    tolerance_bits: float = 0.5
    factor: float = 1.01


@dataclass
class GQConfig:
    """Gaussian Quant: a fixed Gaussian codebook searched with ``rule`` (method.md section 4)."""

    kind: ClassVar[str] = "gq"
    latent_channels: int = 16
    codebook_size: int = 2**16
    codebook_dim: int = 16
    rule: str = "log_ratio"
    beta: float = 1.0
    codebook_method: str = "sobol"
    seed: int = 42
    grouping: str = "contiguous"
    straight_through: bool = False
    target_bits: float | None = None
    max_memory_bytes: int | None = None


@dataclass
class VQConfig:
    kind: ClassVar[str] = "vq"
    latent_channels: int = 16
    codebook_size: int = 2**16
    codebook_dim: int | None = None
    beta: float = 0.25
    legacy: bool = False
    l2_normalize: bool = False
    ema: bool = False
    ema_decay: float = 0.99
    ema_eps: float = 1e-5
    restart_threshold: float = 0.0
    seed: int = 0
    max_search_memory_bytes: int | None = None


@dataclass
class FSQConfig:
    """FSQ levels per group; ``index_order``: ``first_least_significant`` (FSQ paper, default) or
    ``first_most_significant`` (the GQ reference's numbering), see :mod:`gaussquant.quantizers.fsq`."""

    kind: ClassVar[str] = "fsq"
    levels: list[int] = dataclasses.field(default_factory=lambda: [8, 8, 8, 5, 5, 5])
    num_groups: int = 1
    index_order: str = "first_least_significant"


@dataclass
class LFQConfig:
    kind: ClassVar[str] = "lfq"
    codebook_bits: int = 8
    num_groups: int = 2
    entropy_weight: float = 0.1
    commitment_weight: float = 0.025
    diversity_gamma: float = 1.0
    inv_temperature: float = 100.0


@dataclass
class BSQConfig:
    kind: ClassVar[str] = "bsq"
    latent_channels: int = 16
    codebook_bits: int | None = None
    entropy_weight: float = 0.1
    gamma0: float = 1.0
    gamma: float = 1.0
    inv_temperature: float = 1.0
    entropy_group_size: int | None = None


@dataclass
class TokenBridgeConfig:
    kind: ClassVar[str] = "tokenbridge"
    latent_channels: int = 16
    bits: int = 1
    input: str = "mean"
    scale_factor: float = 1.0
    quant_max: float = 5.0
    std_range: float = 3.0
    edge_clamp: float | None = 3.0


BottleneckConfig = (GaussianConfig | GQConfig | VQConfig | FSQConfig | LFQConfig | BSQConfig
                    | TokenBridgeConfig)

BOTTLENECK_CONFIGS: dict[str, type] = {
    c.kind: c for c in (GaussianConfig, GQConfig, VQConfig, FSQConfig, LFQConfig, BSQConfig, TokenBridgeConfig)
}


def bottleneck_config_from_dict(d: dict[str, Any]) -> BottleneckConfig:
    """``{"kind": "vq", "codebook_size": 1024, ...}`` -> ``VQConfig(...)``; unknown kinds or keys are errors."""
    if not isinstance(d, dict) or "kind" not in d:
        raise ValueError(f"a bottleneck config needs a 'kind' key, one of {sorted(BOTTLENECK_CONFIGS)}; got {d!r}")
    kind = d["kind"]
    if kind not in BOTTLENECK_CONFIGS:
        raise ValueError(f"unknown bottleneck kind {kind!r}; valid kinds: {sorted(BOTTLENECK_CONFIGS)}")
    cls = BOTTLENECK_CONFIGS[kind]
    valid = [f.name for f in dataclasses.fields(cls)]
    for key in d:
        if key != "kind" and key not in valid:
            raise ValueError(f"unknown key {key!r} for bottleneck kind {kind!r}; valid keys: {valid}")
    return cls(**{k: v for k, v in d.items() if k != "kind"})


def bottleneck_config_to_dict(cfg: BottleneckConfig) -> dict[str, Any]:
    """The inverse of :func:`bottleneck_config_from_dict`: ``{"kind": ..., **fields}`` (lists, not tuples)."""
    if type(cfg) not in BOTTLENECK_CONFIGS.values():
        raise TypeError(f"not a bottleneck config: {type(cfg).__name__}")
    out: dict[str, Any] = {"kind": cfg.kind}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def build_bottleneck(cfg: BottleneckConfig) -> Bottleneck:
    """Construct the bottleneck a config describes (chosen by config type, never by string import)."""
    if isinstance(cfg, GaussianConfig):
        from gaussquant.quantizers.gaussian import GaussianBottleneck

        return GaussianBottleneck(**_fields(cfg))
    if isinstance(cfg, GQConfig):
        from gaussquant.quantizers.gaussian_quant import GaussianQuantizer

        return GaussianQuantizer(**_fields(cfg))
    if isinstance(cfg, VQConfig):
        from gaussquant.quantizers.vq import VectorQuantizer

        return VectorQuantizer(**_fields(cfg))
    if isinstance(cfg, FSQConfig):
        from gaussquant.quantizers.fsq import FiniteScalarQuantizer

        return FiniteScalarQuantizer(**_fields(cfg))
    if isinstance(cfg, LFQConfig):
        from gaussquant.quantizers.lfq import LookupFreeQuantizer

        return LookupFreeQuantizer(**_fields(cfg))
    if isinstance(cfg, BSQConfig):
        from gaussquant.quantizers.bsq import BinarySphericalQuantizer

        return BinarySphericalQuantizer(**_fields(cfg))
    if isinstance(cfg, TokenBridgeConfig):
        from gaussquant.quantizers.tokenbridge import TokenBridgeQuantizer

        return TokenBridgeQuantizer(**_fields(cfg))
    raise TypeError(f"build_bottleneck got {type(cfg).__name__}; expected one of "
                    f"{[c.__name__ for c in BOTTLENECK_CONFIGS.values()]}")


def _fields(cfg: Any) -> dict[str, Any]:
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
