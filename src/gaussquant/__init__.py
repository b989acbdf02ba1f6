"""gaussquant: image tokenizers the Gaussian Quant way (arXiv 2512.06609).

Train a Gaussian VAE whose per-group KL is held at log2 K bits (TDC), then convert it, with no training,
into a VQ-VAE by searching a fixed random Gaussian codebook of size K.

The public names below are imported lazily so that ``import gaussquant`` stays cheap (no torch until a
name is used); the ``TYPE_CHECKING`` block lists the same imports for type checkers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "TrainConfig": "gaussquant.train.config",
    "load_config": "gaussquant.train.config",
    "save_pretrained": "gaussquant.pretrained",
    "from_pretrained": "gaussquant.pretrained",
    "Autoencoder": "gaussquant.models.autoencoder",
    "ModelConfig": "gaussquant.models.presets",
    "build_autoencoder": "gaussquant.models.presets",
    "BottleneckOutput": "gaussquant.quantizers.base",
    "DiagonalGaussian": "gaussquant.quantizers.posterior",
    "gaussian_codebook": "gaussquant.quantizers.codebooks",
    "codebook_fingerprint": "gaussquant.quantizers.codebooks",
    "CodebookSpec": "gaussquant.quantizers.codebooks",
    "gq_search": "gaussquant.quantizers.search",
    "nearest_search": "gaussquant.quantizers.search",
    "GaussianBottleneck": "gaussquant.quantizers.gaussian",
    "RateController": "gaussquant.quantizers.gaussian",
    "GaussianQuantizer": "gaussquant.quantizers.gaussian_quant",
    "GaussianQuant": "gaussquant.quantizers.drop_in",
    "VectorQuantizer": "gaussquant.quantizers.vq",
    "FiniteScalarQuantizer": "gaussquant.quantizers.fsq",
    "LookupFreeQuantizer": "gaussquant.quantizers.lfq",
    "BinarySphericalQuantizer": "gaussquant.quantizers.bsq",
    "TokenBridgeQuantizer": "gaussquant.quantizers.tokenbridge",
    "GaussianConfig": "gaussquant.quantizers.build",
    "GQConfig": "gaussquant.quantizers.build",
    "VQConfig": "gaussquant.quantizers.build",
    "FSQConfig": "gaussquant.quantizers.build",
    "LFQConfig": "gaussquant.quantizers.build",
    "BSQConfig": "gaussquant.quantizers.build",
    "TokenBridgeConfig": "gaussquant.quantizers.build",
    "BOTTLENECK_CONFIGS": "gaussquant.quantizers.build",
    "bottleneck_config_from_dict": "gaussquant.quantizers.build",
    "bottleneck_config_to_dict": "gaussquant.quantizers.build",
    "build_bottleneck": "gaussquant.quantizers.build",
    "rate_matched_configs": "gaussquant.quantizers.rates",
    "rate_summary": "gaussquant.quantizers.rates",
    "format_rate_table": "gaussquant.quantizers.rates",
    "to_gaussian_quant": "gaussquant.convert",
    "convertibility_report": "gaussquant.convert",
    "import_reference": "gaussquant.reference_checkpoint",
    "REFERENCE_CONFIGS": "gaussquant.reference_checkpoint",
    "evaluate": "gaussquant.eval.evaluate",
    "encode_folder": "gaussquant.encode",
    "decode_tokens": "gaussquant.decode",
    "load_tokens": "gaussquant.tokens",
    "DataConfig": "gaussquant.data.config",
    "build_dataset": "gaussquant.data.config",
    "ImageFolderDataset": "gaussquant.data.folder",
    "DefaultPhotoCrops": "gaussquant.data.default_photos",
    "default_photos": "gaussquant.data.default_photos",
    "FashionMNIST": "gaussquant.data.fashion_mnist",
    "ResumableSampler": "gaussquant.data.sampler",
    "make_loader": "gaussquant.data.sampler",
    "LPIPS": "gaussquant.losses.perceptual",
    "MissingWeightsError": "gaussquant.losses.perceptual",
    "lpips_available": "gaussquant.losses.perceptual",
    "ReconstructionMetrics": "gaussquant.eval.metrics",
    "CodebookUsage": "gaussquant.eval.codebook_stats",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # the same names, eagerly, for type checkers and IDEs (never run)
    from gaussquant.convert import convertibility_report, to_gaussian_quant
    from gaussquant.data.config import DataConfig, build_dataset
    from gaussquant.data.default_photos import DefaultPhotoCrops, default_photos
    from gaussquant.data.fashion_mnist import FashionMNIST
    from gaussquant.data.folder import ImageFolderDataset
    from gaussquant.data.sampler import ResumableSampler, make_loader
    from gaussquant.decode import decode_tokens
    from gaussquant.encode import encode_folder
    from gaussquant.eval.codebook_stats import CodebookUsage
    from gaussquant.eval.evaluate import evaluate
    from gaussquant.eval.metrics import ReconstructionMetrics
    from gaussquant.losses.perceptual import LPIPS, MissingWeightsError, lpips_available
    from gaussquant.models.autoencoder import Autoencoder
    from gaussquant.models.presets import ModelConfig, build_autoencoder
    from gaussquant.pretrained import from_pretrained, save_pretrained
    from gaussquant.quantizers.base import BottleneckOutput
    from gaussquant.quantizers.bsq import BinarySphericalQuantizer
    from gaussquant.quantizers.build import (
        BOTTLENECK_CONFIGS,
        BSQConfig,
        FSQConfig,
        GQConfig,
        GaussianConfig,
        LFQConfig,
        TokenBridgeConfig,
        VQConfig,
        bottleneck_config_from_dict,
        bottleneck_config_to_dict,
        build_bottleneck,
    )
    from gaussquant.quantizers.codebooks import CodebookSpec, codebook_fingerprint, gaussian_codebook
    from gaussquant.quantizers.drop_in import GaussianQuant
    from gaussquant.quantizers.fsq import FiniteScalarQuantizer
    from gaussquant.quantizers.gaussian import GaussianBottleneck, RateController
    from gaussquant.quantizers.gaussian_quant import GaussianQuantizer
    from gaussquant.quantizers.lfq import LookupFreeQuantizer
    from gaussquant.quantizers.posterior import DiagonalGaussian
    from gaussquant.quantizers.rates import format_rate_table, rate_matched_configs, rate_summary
    from gaussquant.quantizers.search import gq_search, nearest_search
    from gaussquant.quantizers.tokenbridge import TokenBridgeQuantizer
    from gaussquant.reference_checkpoint import REFERENCE_CONFIGS, import_reference
    from gaussquant.quantizers.vq import VectorQuantizer
    from gaussquant.tokens import load_tokens
    from gaussquant.train.config import TrainConfig, load_config


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'gaussquant' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
