"""gaussquant: image tokenizers the Gaussian Quant way (arXiv 2512.06609).

Train a Gaussian VAE whose per-group KL is held at log2 K bits (TDC), then convert it, with no training,
into a VQ-VAE by searching a fixed random Gaussian codebook of size K.

The public names below are imported lazily so that ``import gaussquant`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

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
    "import_reference": "gaussquant.import_reference",
    "REFERENCE_CONFIGS": "gaussquant.import_reference",
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


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'gaussquant' has no attribute {name!r}")
