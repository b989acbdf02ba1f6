"""Typed configs for every bottleneck and the one builder that picks the class by config type (no string import).

Each config is a dataclass with a class-level ``kind`` name; ``bottleneck_config_from_dict`` /
``bottleneck_config_to_dict`` convert to and from plain dicts (YAML presets) with strict key checking, and
``build_bottleneck`` constructs the module. Defaults live here and in the constructors they mirror
(docs/method.md sections 2-4 for Gaussian / GQ, section 6 for the baselines).
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

from gaussquant.plain import to_plain
from gaussquant.quantizers.base import Bottleneck


@dataclass
class GaussianConfig:
    """Gaussian VAE bottleneck (TDC when ``target_bits`` is set, fixed ``kl_weight`` otherwise).

    ``factor``: the TDC multipliers' step f (docs/method.md section 3: 1.01; short CPU runs use a larger one so
    that lambda can move far enough within a few hundred steps). ``controller``: ``reference`` (the paper's
    TDC, the default) or ``adaptive`` (band penalties and steps that grow with the violation; see
    ``gaussquant.quantizers.gaussian``).
    """

    kind: ClassVar[str] = "gaussian"
    latent_channels: int = 16
    codebook_dim: int = 16
    target_bits: float | None = 16.0
    kl_weight: float | None = None
    grouping: str = "contiguous"
    factor: float = 1.01
    tolerance_bits: float = 0.5
    controller: str = "reference"


@dataclass
class GQConfig:
    """Gaussian Quant: a fixed Gaussian codebook searched with ``rule`` (docs/method.md section 4).

    ``codebook_method`` is ``"sobol"`` or ``"normal"`` (the codebook is regenerated from method, size, dim
    and seed) or ``"explicit"``: the codebook was given as a tensor and lives only in the saved weights
    (``seed`` is then unused); build such a quantizer with ``build_bottleneck(cfg, codebook=tensor)``.
    """

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
    """VQGAN. Defaults are the GQ reference's baseline: ``legacy=True`` (beta on the codebook term, taming's
    placement; False = the VQ-VAE paper's, on the commitment term) and ``grouping="strided"`` channel groups."""

    kind: ClassVar[str] = "vq"
    latent_channels: int = 16
    codebook_size: int = 2**16
    codebook_dim: int | None = None
    beta: float = 0.25
    legacy: bool = True
    grouping: str = "strided"
    l2_normalize: bool = False
    ema: bool = False
    ema_decay: float = 0.99
    ema_eps: float = 1e-5
    restart_threshold: float = 0.0
    seed: int = 0
    max_memory_bytes: int | None = None


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
    """LFQ. ``codebook_entropy="pooled"`` (the reference's) or ``"per_codebook"`` (MAGVIT-v2 / the library)."""

    kind: ClassVar[str] = "lfq"
    codebook_bits: int = 8
    num_groups: int = 2
    entropy_weight: float = 0.1
    commitment_weight: float = 0.025
    diversity_gamma: float = 1.0
    inv_temperature: float = 100.0
    codebook_entropy: str = "pooled"


@dataclass
class BSQConfig:
    """BSQ. ``inv_temperature`` 100 = the reference's temperature 0.01 (1.0 was this project's earlier value)."""

    kind: ClassVar[str] = "bsq"
    latent_channels: int = 16
    codebook_bits: int | None = None
    entropy_weight: float = 0.1
    gamma0: float = 1.0
    gamma: float = 1.0
    inv_temperature: float = 100.0
    entropy_group_size: int | None = None


@dataclass
class TokenBridgeConfig:
    """TokenBridge. ``input="sample"`` quantizes a posterior sample, as TokenBridge does; ``"mean"`` the mean."""

    kind: ClassVar[str] = "tokenbridge"
    latent_channels: int = 16
    codebook_bits: int = 1
    input: str = "sample"
    noise_seed: int = 0
    scale_factor: float = 1.0
    quant_max: float = 5.0
    std_range: float = 3.0
    edge_clamp: float | None = 3.0


BottleneckConfig = (GaussianConfig | GQConfig | VQConfig | FSQConfig | LFQConfig | BSQConfig
                    | TokenBridgeConfig)

BOTTLENECK_CONFIGS: dict[str, type] = {
    c.kind: c for c in (GaussianConfig, GQConfig, VQConfig, FSQConfig, LFQConfig, BSQConfig, TokenBridgeConfig)
}


# Keys renamed so that one concept has one name; saved configs that still use the old key load with a warning.
RENAMED_KEYS: dict[str, dict[str, str]] = {
    "gaussian": {"group_dim": "codebook_dim"},
    "vq": {"max_search_memory_bytes": "max_memory_bytes"},
    "tokenbridge": {"bits": "codebook_bits"},
}


def rename_old_keys(kind: str, d: dict[str, Any]) -> dict[str, Any]:
    """Map renamed keys of ``kind`` to their current names (a DeprecationWarning per old key seen)."""
    out = dict(d)
    for old, new in RENAMED_KEYS.get(kind, {}).items():
        if old in out:
            warnings.warn(f"bottleneck key {old!r} of kind {kind!r} is now called {new!r}; "
                          f"rename it in the saved config", DeprecationWarning, stacklevel=3)
            out[new] = out.pop(old)
    return out


def bottleneck_config_from_dict(d: dict[str, Any]) -> BottleneckConfig:
    """``{"kind": "vq", "codebook_size": 1024, ...}`` -> ``VQConfig(...)``; unknown kinds or keys are errors."""
    if not isinstance(d, dict) or "kind" not in d:
        raise ValueError(f"a bottleneck config needs a 'kind' key, one of {sorted(BOTTLENECK_CONFIGS)}; got {d!r}")
    kind = d["kind"]
    if kind not in BOTTLENECK_CONFIGS:
        raise ValueError(f"unknown bottleneck kind {kind!r}; valid kinds: {sorted(BOTTLENECK_CONFIGS)}")
    d = rename_old_keys(kind, d)
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
    return {"kind": cfg.kind, **to_plain(cfg)}


EXPLICIT_CODEBOOK = "explicit"


def build_bottleneck(cfg: BottleneckConfig, *, codebook: Any = None) -> Bottleneck:
    """Construct the bottleneck a config describes (chosen by config type, never by string import).

    ``codebook``: the ``(K, d)`` tensor of a GQ config whose ``codebook_method`` is ``"explicit"`` (only then).
    """
    if codebook is not None and not (isinstance(cfg, GQConfig) and cfg.codebook_method == EXPLICIT_CODEBOOK):
        raise ValueError("codebook= is only for a GQConfig with codebook_method='explicit'")
    if isinstance(cfg, GaussianConfig):
        from gaussquant.quantizers.gaussian import GaussianBottleneck

        return GaussianBottleneck(**_fields(cfg))
    if isinstance(cfg, GQConfig):
        from gaussquant.quantizers.gaussian_quant import GaussianQuantizer

        fields = _fields(cfg)
        if cfg.codebook_method == EXPLICIT_CODEBOOK:
            if codebook is None:
                raise ValueError(
                    "this GQ config has codebook_method='explicit': its codebook is stored only with the weights; "
                    "load the model with Autoencoder.from_pretrained, or pass codebook=(K, d) tensor"
                )
            fields["codebook_method"] = "sobol"  # unused when an explicit codebook is given
            return GaussianQuantizer(**fields, codebook=codebook)
        return GaussianQuantizer(**fields)
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


def _bottleneck_classes() -> dict[type, type]:
    """Bottleneck module class -> its config class (imported here, when first asked)."""
    from gaussquant.quantizers.bsq import BinarySphericalQuantizer
    from gaussquant.quantizers.fsq import FiniteScalarQuantizer
    from gaussquant.quantizers.gaussian import GaussianBottleneck
    from gaussquant.quantizers.gaussian_quant import GaussianQuantizer
    from gaussquant.quantizers.lfq import LookupFreeQuantizer
    from gaussquant.quantizers.tokenbridge import TokenBridgeQuantizer
    from gaussquant.quantizers.vq import VectorQuantizer

    return {GaussianBottleneck: GaussianConfig, GaussianQuantizer: GQConfig, VectorQuantizer: VQConfig,
            FiniteScalarQuantizer: FSQConfig, LookupFreeQuantizer: LFQConfig,
            BinarySphericalQuantizer: BSQConfig, TokenBridgeQuantizer: TokenBridgeConfig}


def config_of(bottleneck: Bottleneck) -> BottleneckConfig:
    """The typed config of a built bottleneck, from the constructor arguments it recorded (quantizers/base.py).

    Raises a TypeError for a bottleneck class without a config, and a ValueError when it was built with an
    argument that no config field can express (e.g. a non-default ``multiplier_clamp``).
    """
    cfg_cls = next((c for k, c in _bottleneck_classes().items() if type(bottleneck) is k), None)
    if cfg_cls is None:
        raise TypeError(f"{type(bottleneck).__name__} has no bottleneck config; valid bottlenecks are built by "
                        "build_bottleneck from one of " + ", ".join(c.__name__ for c in BOTTLENECK_CONFIGS.values()))
    arguments = bottleneck.init_arguments
    names = {f.name for f in dataclasses.fields(cfg_cls)}
    values = {k: list(v) if isinstance(v, tuple) else v for k, v in arguments.items() if k in names}
    if cfg_cls is GQConfig and arguments.get("codebook") is not None:
        values["codebook_method"] = EXPLICIT_CODEBOOK
    defaults = dict(inspect.signature(type(bottleneck).__init__).parameters)
    for name, value in arguments.items():
        if name in names or (cfg_cls is GQConfig and name == "codebook"):
            continue
        default = defaults[name].default if name in defaults else inspect.Parameter.empty
        if default is inspect.Parameter.empty or value != default:
            raise ValueError(f"{type(bottleneck).__name__} was built with {name}={value!r}, which its config "
                             f"{cfg_cls.__name__} cannot record; build it with the default to save it")
    return cfg_cls(**values)


def _fields(cfg: Any) -> dict[str, Any]:
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
