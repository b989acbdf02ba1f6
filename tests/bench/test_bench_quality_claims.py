"""Claims benchmarks: theorem check (tiny), conversion and spread helpers on an untrained toy VAE."""

import json

import torch
from torch.utils.data import Dataset

from gaussquant.bench import conversion, spread, theory
from gaussquant.models.presets import ModelConfig, build_autoencoder
from gaussquant.quantizers.build import GaussianConfig, build_bottleneck


def test_theory_small_grid(tmp_path):
    result = theory.run(tmp_path, trials=400, t_values=(-1.0, 0.0, 2.0))
    assert result["bounds_hold"] and result["all_within_4se"]
    ks = [(r["mu"], r["sigma"], r["K"]) for r in result["rows"]]
    assert len(ks) == len(set(ks))  # no duplicate K per posterior
    assert (tmp_path / "figures" / "theory.png").is_file()
    assert json.loads((tmp_path / "theory.json").read_text())["trials"] == 400


def _toy_vae():
    torch.manual_seed(0)
    return build_autoencoder(ModelConfig(arch="unet-tiny", image_size=32),
                             build_bottleneck(GaussianConfig(latent_channels=4, codebook_dim=4, target_bits=8.0))).eval()


def test_spread_kl_values_shapes_and_sums():
    vae = _toy_vae()
    data = [torch.rand(3, 32, 32) * 2 - 1 for _ in range(3)]
    per_dim, per_group = spread.kl_values(vae, data)
    assert per_dim.shape == (3 * 8 * 8 * 4,) and per_group.shape == (3 * 8 * 8,)
    assert torch.allclose(per_dim.sum(), per_group.sum())
    assert (per_dim >= 0).all()


class _Images(Dataset):
    def __init__(self, n):
        self.x = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i]


def test_conversion_experiments_on_toy_model(tmp_path):
    vae = _toy_vae()
    data = _Images(4)
    row = conversion._evaluate(vae, data, codebook_size=16, codebook_method="normal", seed=3)
    assert conversion._mean_std([None, 1.0, 3.0]) == (2.0, 2 ** 0.5) and conversion._mean_std([None]) is None
    assert row["bits_per_token"] == 4 and row["log2_k"] == 4 and row["seed"] == 3
    assert set(row["continuous"]) == {"psnr", "ssim", "fd_effnet_lite0"}
    path = conversion.plot_size([row, {**row, "log2_k": 5.0}], 4, tmp_path / "size.png")
    assert path.is_file()
    text = conversion.format_result({"size": [row]})
    assert "log2K=4" in text
