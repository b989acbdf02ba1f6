"""evaluate(): JSON keys, no dropped sample, metric sanity through the whole pipeline, 2-rank == 1-rank."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from gaussquant.eval.evaluate import evaluate
from gaussquant.eval.metrics import psnr_uint8
from gaussquant.models.autoencoder import AutoencoderConfig
from gaussquant.models.presets import ModelConfig, build_autoencoder
from gaussquant.quantizers.base import BottleneckOutput, DiscreteBottleneck
from gaussquant.quantizers.build import VQConfig, build_bottleneck

FAST = {"lpips": False, "rfid": False, "fd_effnet": False}
REQUIRED = ("num_images", "psnr", "ssim", "lpips", "rfid", "fd_effnet_lite0", "codebook_usage",
            "index_entropy_bits", "bits_per_token", "bpp", "protocol", "unavailable")


def tiny_vq(seed: int = 0):
    torch.manual_seed(seed)  # weights of the tiny model; tests only
    cfg = VQConfig(latent_channels=8, codebook_size=64, codebook_dim=4, seed=seed)
    return build_autoencoder(ModelConfig(arch="unet-tiny", image_size=16), build_bottleneck(cfg)).eval()


class CyclicTokens(DiscreteBottleneck):
    """Identity latent; indices cycle 0..K-1 over the flattened token grid: a uniform index stream."""

    def __init__(self, codebook_size: int) -> None:
        super().__init__()
        self.codebook_size, self.num_groups, self.in_channels, self.latent_channels = codebook_size, 1, 3, 3

    @property
    def config(self):
        return SimpleNamespace(kind="cyclic")  # not a Gaussian-family bottleneck

    def forward(self, h):
        b, _, hh, ww = h.shape
        idx = (torch.arange(b * hh * ww) % self.codebook_size).view(b, 1, hh, ww)
        return BottleneckOutput(z_hat=h, indices=idx)


class IdentityTokenizer(nn.Module):
    """x_hat == x exactly, with a discrete bottleneck of uniform usage."""

    def __init__(self, codebook_size: int = 4) -> None:
        super().__init__()
        self.bottleneck = CyclicTokens(codebook_size)
        self.anchor = nn.Parameter(torch.zeros(1))  # gives the model a device
        self.config = AutoencoderConfig(model=None, bottleneck=self.bottleneck.config)
        self.metadata = {}

    def encode(self, x):
        return self.bottleneck(x)

    def decode(self, z):
        return z


def test_json_keys_count_and_psnr_against_direct(tmp_path):
    model = tiny_vq()
    out = evaluate(model, None, image_size=16, num_crops=7, batch_size=3, metric_options=FAST,
                   json_path=tmp_path / "m.json")
    assert set(REQUIRED) <= set(out)
    assert json.loads((tmp_path / "m.json").read_text())["num_images"] == 7  # 7 with batches of 3: none dropped
    assert out["protocol"]["num_images"] == 7 and out["protocol"]["resolution"] == "16x16"
    assert "continuous" not in out  # VQ has no posterior
    assert out["bits_per_token"] == pytest.approx(2 * 6) and out["bpp"] == pytest.approx(16 * 12 / 256)
    assert out["rfid"] is None and "rfid" in out["unavailable"]
    from gaussquant.data.default_photos import DefaultPhotoCrops

    data = DefaultPhotoCrops("eval", image_size=16, num_crops=7, seed=0, flip=False)
    x = torch.stack([data[i] for i in range(7)])
    with torch.no_grad():
        direct = psnr_uint8(x, model(x).x_hat).double().mean().item()
    assert out["psnr"] == pytest.approx(direct, abs=1e-9)


def test_identity_sanity_cap_ssim_and_uniform_usage():
    # (the Frechet distance of a set against itself is tested in the metrics' own tests: EfficientNet
    # features cost ~10 s here)
    out = evaluate(IdentityTokenizer(4), None, image_size=16, num_crops=6, batch_size=4, metric_options=FAST)
    assert out["psnr"] == 100.0 and out["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert out["codebook_usage"] == 1.0 and out["index_entropy_bits"] == pytest.approx(2.0, abs=1e-3)
    assert out["bits_per_token"] == 2.0 and out["bpp"] == pytest.approx(2.0)


def _rank_main(rank: int, world: int, init_file: str, model_dir: str, out_file: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        res = evaluate(model_dir, None, num_crops=7, batch_size=2, device="cpu", metric_options=FAST)
        if rank == 0:
            Path(out_file).write_text(json.dumps(res))
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_equal_one(tmp_path):
    import torch.multiprocessing as mp

    tiny_vq().save_pretrained(tmp_path / "model")
    single = evaluate(tmp_path / "model", None, num_crops=7, batch_size=2, device="cpu", metric_options=FAST)
    mp.spawn(_rank_main, args=(2, str(tmp_path / "init"), str(tmp_path / "model"), str(tmp_path / "r.json")),
             nprocs=2, join=True)
    multi = json.loads((tmp_path / "r.json").read_text())
    assert multi["protocol"]["processes"] == 2 and single["protocol"]["processes"] == 1
    for key in ("num_images", "psnr", "ssim", "codebook_usage", "index_entropy_bits", "perplexity", "bpp"):
        assert math.isclose(multi[key], single[key], rel_tol=1e-12, abs_tol=1e-12), key
    assert multi["codebook_usage_per_group"] == single["codebook_usage_per_group"]
