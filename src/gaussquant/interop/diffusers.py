"""diffusers ``AutoencoderKL`` <-> gaussquant UNet Autoencoder (docs/method.md section 7: the UNet *is* the
Stable-Diffusion-family VAE, so an SD-family VAE can be fine-tuned with TDC and converted to GQ).

A diffusers VAE folder holds ``config.json`` and ``diffusion_pytorch_model.safetensors``. This module reads
and writes those two files itself (JSON + safetensors): diffusers is not imported here, only by the tests
that check the numbers against it (``pip install gaussquant[diffusers]``).

What maps to what (``n`` levels; diffusers' ``up_blocks[k]`` works at the resolution of gaussquant's
``up[n-1-k]``):

| diffusers config                        | gaussquant (``ModelConfig(arch="unet-custom", unet=UNetArch)``) |
| --------------------------------------- | ------------------------------------------------------------ |
| ``block_out_channels`` [c0, c1, ...]    | ``base_channels`` = c0, ``channel_mults`` = ci / c0          |
| ``layers_per_block``                    | ``num_res_blocks`` (the decoder has one more per level, both) |
| ``latent_channels``                     | the Gaussian bottleneck's ``latent_channels`` (z_channels)   |
| ``norm_num_groups``                     | ``norm_groups``                                              |
| ``mid_block_add_attention`` (True)      | ``mid_attention``                                            |
| ``Attn{Down,Up}...Block2D`` at level i  | ``attn_levels`` containing i (encoder and decoder alike)     |
| ``use_quant_conv`` / ``use_post_quant_conv`` | ``quant_conv`` / ``post_quant_conv``                    |
| ``sample_size``                         | ``image_size`` (a label here: attention goes by level index)  |

``quant_conv`` and ``post_quant_conv`` are *represented*, not folded: the encoder ends with the 1x1
``quant_conv`` (its 2C channels are the moments: mean = first C, logvar = last C, clamped to [-30, 20] as
in diffusers) and the decoder starts with the 1x1 ``post_quant_conv``. Folding ``quant_conv`` into
``conv_out`` would be exact only up to rounding, and ``post_quant_conv``'s bias cannot be folded into the
zero-padded 3x3 ``conv_in`` at all (the border differs), so keeping both layers is the one way that gives
diffusers' outputs exactly and writes the same weights back. Key names: ``quant_conv`` ->
``encoder.quant_conv``, ``post_quant_conv`` -> ``decoder.post_quant_conv``; attention ``to_q/to_k/to_v/
to_out.0`` (Linear) -> ``q/k/v/proj_out`` (1x1 conv, same numbers); the deprecated names ``query/key/value/
proj_attn`` of older VAE files load too. ``scaling_factor``, ``shift_factor`` and ``latents_mean/std`` are
what a diffusion pipeline multiplies the latents by, not part of the VAE; export keeps them from
``base_config`` if given (they describe the *original* latents: re-measure them after a TDC fine-tune).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from gaussquant.models.autoencoder import Autoencoder
from gaussquant.models.presets import CUSTOM_UNET, ModelConfig, UNetArch, build_autoencoder
from gaussquant.models.unet import UNetDecoder, UNetEncoder
from gaussquant.quantizers.build import GaussianConfig, build_bottleneck

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "model_config_from_diffusers",
    "diffusers_config_from_model",
    "gaussquant_key",
    "diffusers_key",
    "load_diffusers_vae",
    "save_diffusers_vae",
]

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
_DOWN = {"DownEncoderBlock2D": False, "AttnDownEncoderBlock2D": True}
_UP = {"UpDecoderBlock2D": False, "AttnUpDecoderBlock2D": True}
# keys of an AutoencoderKL config that describe the latents for a pipeline, not the network
_PIPELINE_KEYS = ("scaling_factor", "shift_factor", "latents_mean", "latents_std", "force_upcast", "sample_size")

_RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "conv_shortcut": "nin_shortcut"}
_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_ATTN_OLD = {"query": "q", "key": "k", "value": "v", "proj_attn": "proj_out"}  # pre-0.14 diffusers files
_ATTN_ALL = {**_ATTN, **_ATTN_OLD}


# ------------------------------------------------------------------------------------------ configs
def model_config_from_diffusers(config: Mapping[str, Any], image_size: int | None = None) -> ModelConfig:
    """The gaussquant :class:`ModelConfig` of a diffusers ``AutoencoderKL`` config (its config.json dict).

    ``image_size`` defaults to the config's ``sample_size`` (32 if absent, as in diffusers) rounded up to a
    multiple of the downsampling factor. Raises a ValueError naming the key for a
    layout gaussquant's UNet cannot express (another activation, non-RGB, unmirrored attention, ...).
    """
    name = config.get("_class_name", "AutoencoderKL")
    if name != "AutoencoderKL":
        raise ValueError(f"config.json describes a diffusers {name}; only AutoencoderKL folders can be loaded")
    if config.get("act_fn", "silu") != "silu":
        raise ValueError(f"act_fn {config['act_fn']!r} is not supported; gaussquant's UNet uses silu")
    for key in ("in_channels", "out_channels"):
        if config.get(key, 3) != 3:
            raise ValueError(f"{key}={config[key]} is not supported; gaussquant's UNet takes RGB images (3)")
    channels = [int(c) for c in config.get("block_out_channels", [64])]
    down = list(config.get("down_block_types", ["DownEncoderBlock2D"]))
    up = list(config.get("up_block_types", ["UpDecoderBlock2D"]))
    if len(down) != len(channels) or len(up) != len(channels):
        raise ValueError(
            f"block_out_channels has {len(channels)} levels but down_block_types has {len(down)} and "
            f"up_block_types {len(up)}; a diffusers AutoencoderKL needs one of each per level"
        )
    for kind, table in ((down, _DOWN), (up, _UP)):
        bad = sorted(set(kind) - set(table))
        if bad:
            raise ValueError(f"block types {bad} are not supported; use {sorted(table)}")
    attn_down = tuple(i for i, t in enumerate(down) if _DOWN[t])
    # up_blocks[k] is level n-1-k
    attn_up = tuple(sorted(len(up) - 1 - k for k, t in enumerate(up) if _UP[t]))
    if attn_down != attn_up:
        raise ValueError(
            f"attention levels differ between encoder {list(attn_down)} and decoder {list(attn_up)} "
            "(up_block_types run from the lowest resolution); gaussquant's UNet places them alike"
        )
    base = channels[0]
    if any(c % base for c in channels):
        raise ValueError(f"block_out_channels {channels} must all be multiples of the first ({base})")
    arch = UNetArch(
        base_channels=base,
        channel_mults=tuple(c // base for c in channels),
        num_res_blocks=int(config.get("layers_per_block", 1)),
        attn_levels=attn_down,
        z_channels=int(config.get("latent_channels", 4)),
        mid_attention=bool(config.get("mid_block_add_attention", True)),
        norm_groups=int(config.get("norm_num_groups", 32)),
        quant_conv=bool(config.get("use_quant_conv", True)),
        post_quant_conv=bool(config.get("use_post_quant_conv", True)),
    )
    if image_size is None:
        # diffusers' own default is 32; the size only labels the config here (attention is placed by level
        # index), so round it up to a multiple of f rather than refuse the folder
        size = config.get("sample_size") or 32
        size = int(size[0] if isinstance(size, (list, tuple)) else size)
        f = arch.downsample_factor
        image_size = max(f, -(-size // f) * f)
    return ModelConfig(arch=CUSTOM_UNET, image_size=image_size, unet=arch)


def diffusers_config_from_model(model: Autoencoder, base_config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``AutoencoderKL`` config.json dict of a UNet ``model`` with a Gaussian (or GQ) bottleneck.

    The architecture is read from the modules themselves; ``base_config`` contributes only the pipeline
    keys (``scaling_factor``, ``shift_factor``, ``latents_mean``, ``latents_std``, ``force_upcast``,
    ``sample_size``).
    """
    enc, dec = model.encoder, model.decoder
    if not isinstance(enc, UNetEncoder) or not isinstance(dec, UNetDecoder):
        raise TypeError(
            f"only UNet models have a diffusers AutoencoderKL layout; got {type(enc).__name__} / {type(dec).__name__}"
        )
    latent = int(model.bottleneck.latent_channels)
    if model.bottleneck.in_channels != 2 * latent:
        raise TypeError(
            f"{type(model.bottleneck).__name__} has no Gaussian posterior (the encoder must emit mean and "
            "logvar); export the Gaussian VAE, not a VQ/FSQ/LFQ/BSQ model"
        )
    attn_enc = [bool(len(level.attn)) for level in enc.down]
    attn_dec = [bool(len(level.attn)) for level in dec.up]
    if attn_enc != attn_dec or (enc.mid.attn_1 is None) != (dec.mid.attn_1 is None):
        raise ValueError("encoder and decoder place attention differently; diffusers' AutoencoderKL cannot hold it")
    config: dict[str, Any] = {
        "_class_name": "AutoencoderKL",
        "in_channels": enc.in_channels,
        "out_channels": dec.out_channels,
        "down_block_types": ["AttnDownEncoderBlock2D" if a else "DownEncoderBlock2D" for a in attn_enc],
        "up_block_types": ["AttnUpDecoderBlock2D" if a else "UpDecoderBlock2D" for a in reversed(attn_dec)],
        "block_out_channels": [level.block[-1].conv2.out_channels for level in enc.down],
        "layers_per_block": len(enc.down[0].block),
        "act_fn": "silu",
        "latent_channels": latent,
        "norm_num_groups": enc.norm_out.num_groups,
        "mid_block_add_attention": enc.mid.attn_1 is not None,
        "use_quant_conv": enc.quant_conv is not None,
        "use_post_quant_conv": dec.post_quant_conv is not None,
    }
    for key in _PIPELINE_KEYS:
        if base_config is not None and key in base_config:
            config[key] = base_config[key]
    return config


# ------------------------------------------------------------------------------------------ keys
def _sub(key: str, rules: list[tuple[str, Any]]) -> str | None:
    for pattern, make in rules:
        m = re.fullmatch(pattern, key)
        if m:
            return make(m)
    return None


def _alt(names: Mapping[str, str]) -> str:
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))


def gaussquant_key(key: str, num_levels: int) -> str | None:
    """A diffusers AutoencoderKL state-dict key -> the gaussquant Autoencoder key (None if it has none)."""
    res, att = _alt(_RESNET), _alt(_ATTN_ALL)
    rules: list[tuple[str, Any]] = [
        (r"quant_conv\.(weight|bias)", lambda m: f"encoder.quant_conv.{m[1]}"),
        (r"post_quant_conv\.(weight|bias)", lambda m: f"decoder.post_quant_conv.{m[1]}"),
        (r"(encoder|decoder)\.(conv_in|conv_out)\.(weight|bias)", lambda m: m[0]),
        (r"(encoder|decoder)\.conv_norm_out\.(weight|bias)", lambda m: f"{m[1]}.norm_out.{m[2]}"),
        (rf"(encoder|decoder)\.mid_block\.resnets\.([01])\.({res})\.(weight|bias)",
         lambda m: f"{m[1]}.mid.block_{int(m[2]) + 1}.{_RESNET[m[3]]}.{m[4]}"),
        (rf"(encoder|decoder)\.mid_block\.attentions\.0\.({att})\.(weight|bias)",
         lambda m: f"{m[1]}.mid.attn_1.{_ATTN_ALL[m[2]]}.{m[3]}"),
        (rf"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.({res})\.(weight|bias)",
         lambda m: f"encoder.down.{m[1]}.block.{m[2]}.{_RESNET[m[3]]}.{m[4]}"),
        (rf"encoder\.down_blocks\.(\d+)\.attentions\.(\d+)\.({att})\.(weight|bias)",
         lambda m: f"encoder.down.{m[1]}.attn.{m[2]}.{_ATTN_ALL[m[3]]}.{m[4]}"),
        (r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(weight|bias)",
         lambda m: f"encoder.down.{m[1]}.downsample.conv.{m[2]}"),
        (rf"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.({res})\.(weight|bias)",
         lambda m: f"decoder.up.{num_levels - 1 - int(m[1])}.block.{m[2]}.{_RESNET[m[3]]}.{m[4]}"),
        (rf"decoder\.up_blocks\.(\d+)\.attentions\.(\d+)\.({att})\.(weight|bias)",
         lambda m: f"decoder.up.{num_levels - 1 - int(m[1])}.attn.{m[2]}.{_ATTN_ALL[m[3]]}.{m[4]}"),
        (r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(weight|bias)",
         lambda m: f"decoder.up.{num_levels - 1 - int(m[1])}.upsample.conv.{m[2]}"),
    ]
    return _sub(key, rules)


def diffusers_key(key: str, num_levels: int) -> str | None:
    """A gaussquant encoder/decoder key -> the current diffusers key (None for e.g. bottleneck buffers)."""
    res = {v: k for k, v in _RESNET.items()}
    att = {v: k for k, v in _ATTN.items()}
    r, a = _alt(res), _alt(att)
    rules: list[tuple[str, Any]] = [
        (r"encoder\.quant_conv\.(weight|bias)", lambda m: f"quant_conv.{m[1]}"),
        (r"decoder\.post_quant_conv\.(weight|bias)", lambda m: f"post_quant_conv.{m[1]}"),
        (r"(encoder|decoder)\.(conv_in|conv_out)\.(weight|bias)", lambda m: m[0]),
        (r"(encoder|decoder)\.norm_out\.(weight|bias)", lambda m: f"{m[1]}.conv_norm_out.{m[2]}"),
        (rf"(encoder|decoder)\.mid\.block_([12])\.({r})\.(weight|bias)",
         lambda m: f"{m[1]}.mid_block.resnets.{int(m[2]) - 1}.{res[m[3]]}.{m[4]}"),
        (rf"(encoder|decoder)\.mid\.attn_1\.({a})\.(weight|bias)",
         lambda m: f"{m[1]}.mid_block.attentions.0.{att[m[2]]}.{m[3]}"),
        (rf"encoder\.down\.(\d+)\.block\.(\d+)\.({r})\.(weight|bias)",
         lambda m: f"encoder.down_blocks.{m[1]}.resnets.{m[2]}.{res[m[3]]}.{m[4]}"),
        (rf"encoder\.down\.(\d+)\.attn\.(\d+)\.({a})\.(weight|bias)",
         lambda m: f"encoder.down_blocks.{m[1]}.attentions.{m[2]}.{att[m[3]]}.{m[4]}"),
        (r"encoder\.down\.(\d+)\.downsample\.conv\.(weight|bias)",
         lambda m: f"encoder.down_blocks.{m[1]}.downsamplers.0.conv.{m[2]}"),
        (rf"decoder\.up\.(\d+)\.block\.(\d+)\.({r})\.(weight|bias)",
         lambda m: f"decoder.up_blocks.{num_levels - 1 - int(m[1])}.resnets.{m[2]}.{res[m[3]]}.{m[4]}"),
        (rf"decoder\.up\.(\d+)\.attn\.(\d+)\.({a})\.(weight|bias)",
         lambda m: f"decoder.up_blocks.{num_levels - 1 - int(m[1])}.attentions.{m[2]}.{att[m[3]]}.{m[4]}"),
        (r"decoder\.up\.(\d+)\.upsample\.conv\.(weight|bias)",
         lambda m: f"decoder.up_blocks.{num_levels - 1 - int(m[1])}.upsamplers.0.conv.{m[2]}"),
    ]
    return _sub(key, rules)


def _is_attn_projection(gq_key: str) -> bool:
    """1x1-conv attention weights, which diffusers stores as Linear (C, C) matrices."""
    return re.search(r"\.(attn\.\d+|attn_1)\.(q|k|v|proj_out)\.weight$", gq_key) is not None


# ------------------------------------------------------------------------------------------ load / save
def _read_folder(path: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    if not path.is_dir():
        raise FileNotFoundError(f"{str(path)!r} is not a directory; pass a diffusers AutoencoderKL folder")
    cfg_file, weights = path / CONFIG_NAME, path / WEIGHTS_NAME
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{str(path)!r} has no {CONFIG_NAME}; pass the folder AutoencoderKL.save_pretrained wrote")
    if not weights.is_file():
        others = sorted(p.name for p in path.glob("diffusion_pytorch_model*"))
        hint = f" (found {others}: re-save it with safe_serialization=True, unsharded, float32)" if others else ""
        raise FileNotFoundError(f"{str(path)!r} has no {WEIGHTS_NAME}{hint}")
    try:
        config = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{str(cfg_file)!r} is not valid JSON ({err})") from None
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{str(weights)!r} is truncated or corrupt ({err})") from None
    return config, state


def load_diffusers_vae(
    path: str | Path, gaussian: GaussianConfig | None = None, image_size: int | None = None
) -> Autoencoder:
    """A diffusers AutoencoderKL folder -> a gaussquant :class:`Autoencoder` with a Gaussian bottleneck.

    Args:
        path: the folder (``config.json`` + ``diffusion_pytorch_model.safetensors``).
        gaussian: the bottleneck to fine-tune with; its ``latent_channels`` must equal the VAE's. Default:
            TDC with one group per token (``codebook_dim = latent_channels``) at 16 bits.
        image_size: overrides ``sample_size`` (see :func:`model_config_from_diffusers`).

    Returns:
        the model in eval mode, float32; for the same images its posterior ``mean``/``logvar`` equal
        diffusers' ``encode(x).latent_dist`` and ``decode(z)`` equals diffusers' ``decode(z).sample``.
        :func:`model_config_from_diffusers` gives the ModelConfig to save it with.
    """
    path = Path(path)
    config, state = _read_folder(path)
    model_cfg = model_config_from_diffusers(config, image_size)
    latent = model_cfg.z_channels
    if gaussian is None:
        gaussian = GaussianConfig(latent_channels=latent, codebook_dim=latent, target_bits=16.0)
    if not isinstance(gaussian, GaussianConfig):
        raise TypeError(f"gaussian must be a GaussianConfig; got {type(gaussian).__name__}")
    if gaussian.latent_channels != latent:
        raise ValueError(
            f"the VAE has latent_channels={latent} but the GaussianConfig has {gaussian.latent_channels}; "
            f"build it with latent_channels={latent}"
        )
    model = build_autoencoder(model_cfg, build_bottleneck(gaussian))
    own = model.state_dict()
    levels = len(model_cfg.preset.channel_mults)
    mapped: dict[str, Tensor] = {}
    unexpected = []
    for key, value in state.items():
        target = gaussquant_key(key, levels)
        if target is None or target not in own:
            unexpected.append(key)
            continue
        if _is_attn_projection(target) and value.numel() == own[target].numel():
            value = value.reshape(own[target].shape)  # Linear (C, C) -> 1x1 conv (C, C, 1, 1)
        mapped[target] = value
    expected = {k for k in own if k.startswith(("encoder.", "decoder."))}
    missing = sorted(expected - set(mapped))
    shapes = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
              for k, v in mapped.items() if v.shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{len(x)} {what} (e.g. {', '.join(x[:3])})"
                 for x, what in ((missing, "missing"), (sorted(unexpected), "unexpected"), (shapes, "mismatched"))
                 if x]
        raise ValueError(
            f"{str(path / WEIGHTS_NAME)!r} does not match its config.json: {'; '.join(parts)}. "
            "Pass the folder written by AutoencoderKL.save_pretrained, unchanged"
        )
    own.update({k: v.to(own[k].dtype) for k, v in mapped.items()})
    model.load_state_dict(own, strict=True)
    ignored = sorted(k for k in _PIPELINE_KEYS if config.get(k) is not None and k != "sample_size")
    if ignored:
        log.info("diffusers pipeline keys not used by the VAE itself: %s", ", ".join(ignored))
    return model.eval()


def save_diffusers_vae(
    model: Autoencoder, directory: str | Path, base_config: Mapping[str, Any] | None = None
) -> Path:
    """Write ``model``'s continuous VAE as a diffusers AutoencoderKL folder; returns the folder.

    ``AutoencoderKL.from_pretrained(directory)`` then gives the same posterior and decoder outputs. A GQ
    model exports its Gaussian VAE (the codebook has no place in diffusers' layout). ``base_config``: the
    original config.json dict, whose pipeline keys (``scaling_factor``, ...) are kept.
    """
    config = diffusers_config_from_model(model, base_config)
    levels = len(config["block_out_channels"])
    tensors: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        if not key.startswith(("encoder.", "decoder.")):
            continue  # bottleneck state (TDC multipliers, codebook) has no diffusers counterpart
        target = diffusers_key(key, levels)
        if target is None:
            raise ValueError(f"{key} has no diffusers AutoencoderKL counterpart; this model cannot be exported")
        value = value.detach().to("cpu", torch.float32)
        tensors[target] = (value.reshape(value.shape[:2]) if _is_attn_projection(key) else value).contiguous().clone()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return directory
