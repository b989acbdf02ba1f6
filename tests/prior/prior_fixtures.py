"""Shared helpers of the prior tests: synthetic token files and a tiny saved VQ tokenizer."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gaussquant.tokens import TokenWriter

SIZE = 16  # image side; the tiny UNet makes a 4 x 4 grid


def write_tokens(path: Path, indices: np.ndarray, *, codebook_size: int, fingerprint: str = "f" * 64,
                 names: list[str] | None = None, image_size: tuple[int, int] = (SIZE, SIZE)) -> Path:
    """Write ``indices`` (N, G, h, w) or (N, L, G) as a tokens file."""
    names = names or [f"img{i}.png" for i in range(len(indices))]
    with TokenWriter(path, num_images=len(indices), codebook_size=codebook_size, image_size=image_size,
                     model_fingerprint=fingerprint) as writer:
        writer.write(torch.as_tensor(indices.astype(np.int64)), names)
        writer.close()
    return path


def random_grids(num: int, *, groups: int, grid: tuple[int, int], codebook_size: int, seed: int) -> np.ndarray:
    """(num, G, h, w) uniformly random indices."""
    return np.random.default_rng(seed).integers(0, codebook_size, (num, groups, *grid))


def save_tiny_vq(directory: Path, seed: int, codebook_size: int = 16) -> Path:
    """Save a tiny untrained VQ autoencoder (G = 2 groups of K codewords per position) and return its folder."""
    from gaussquant.models.presets import ModelConfig, build_autoencoder
    from gaussquant.pretrained import save_pretrained
    from gaussquant.quantizers.build import VQConfig, build_bottleneck

    torch.manual_seed(seed)  # weights of the tiny model; tests only
    model_cfg = ModelConfig(arch="unet-tiny", image_size=SIZE)
    vq_cfg = VQConfig(latent_channels=8, codebook_size=codebook_size, codebook_dim=4, seed=seed)
    model = build_autoencoder(model_cfg, build_bottleneck(vq_cfg)).eval()
    save_pretrained(model, directory, model_config=model_cfg, bottleneck_config=vq_cfg)
    return directory


def write_images(root: Path, num: int, classes: tuple[str, ...] = ("shirt", "shoe")) -> Path:
    """``num`` random RGB images under ``root/CLASS/``."""
    rng = np.random.default_rng(0)
    for i in range(num):
        folder = root / classes[i % len(classes)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    return root
