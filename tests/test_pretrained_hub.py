"""Hugging Face Hub, offline: loading a repo id from a snapshot in the Hub cache layout, and push_to_hub
uploading the files save_pretrained writes (the network calls replaced at HfApi's boundary)."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from gaussquant.convert import to_gaussian_quant
from gaussquant.models.autoencoder import Autoencoder
from gaussquant.models.presets import ModelConfig, build_autoencoder
from gaussquant.quantizers.build import GaussianConfig, build_bottleneck

huggingface_hub = pytest.importorskip("huggingface_hub", reason="the [hub] extra is not installed")
hub_constants = pytest.importorskip("huggingface_hub.constants")

REPO = "someone/tiny-gq"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def tiny_gq() -> Autoencoder:
    torch.manual_seed(0)
    cfg = GaussianConfig(latent_channels=8, codebook_dim=4, target_bits=4.0)
    vae = build_autoencoder(ModelConfig(arch="unet-tiny", image_size=16), build_bottleneck(cfg)).eval()
    return to_gaussian_quant(vae, 16, rule="nearest")


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty Hub cache in tmp_path, offline (environment and the library's constants alike)."""
    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    return cache


def put_in_cache(cache: Path, repo_id: str, folder: Path) -> None:
    """The Hub cache layout: models--owner--name/{refs/main, snapshots/<commit>/<files>}."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    shutil.copytree(folder, repo / "snapshots" / COMMIT)


def test_from_pretrained_reads_a_repo_id_from_the_hub_cache_offline(tmp_path, offline_cache):
    model = tiny_gq()
    model.save_pretrained(tmp_path / "saved")
    put_in_cache(offline_cache, REPO, tmp_path / "saved")
    loaded = Autoencoder.from_pretrained(REPO)
    assert loaded.config == model.config and loaded.config.bottleneck.rule == "nearest"
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded.tokenize(x), model.tokenize(x))
    with pytest.raises(FileNotFoundError, match="nor in the Hugging Face Hub cache"):
        Autoencoder.from_pretrained("someone/not-cached")


def test_local_paths_are_never_looked_up_online(tmp_path, monkeypatch, offline_cache):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Autoencoder.from_pretrained("runs/typo")  # 'runs' is a local folder: a missing path, not a repo id
    with pytest.raises(ValueError, match="apply to a Hub repo id"):
        Autoencoder.from_pretrained(tmp_path / "runs", revision="main")


def test_push_to_hub_uploads_the_saved_files(monkeypatch):
    calls = {}

    def create_repo(self, repo_id, **kwargs):
        calls["create"] = (repo_id, kwargs)
        return repo_id

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        folder = Path(folder_path)
        calls["upload"] = (repo_id, kwargs, {p.name: p.read_bytes() for p in folder.iterdir()})
        return SimpleNamespace(commit_url=f"{repo_id}/commit/1")  # what a CommitInfo exposes and we read

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    model = tiny_gq()
    url = model.push_to_hub(REPO, private=True, metrics={"psnr": 21.5, "protocol": {"data": "x", "num_images": 4}})
    assert url.endswith("/commit/1")
    assert calls["create"] == (REPO, {"private": True, "exist_ok": True})
    repo_id, kwargs, files = calls["upload"]
    assert repo_id == REPO and set(files) == {"config.json", "model.safetensors", "README.md"}
    meta = json.loads(files["config.json"])
    assert meta["bottleneck"]["rule"] == "nearest" and meta["metrics"]["psnr"] == 21.5
    card = files["README.md"].decode()
    assert "library_name: gaussquant" in card and f'from_pretrained("{REPO}")' in card
    assert meta["codebook"]["fingerprint"] in card and "| psnr | 21.5 |" in card
    assert "bits per pixel" in card and "| 8.000 | 16 (16x16 px) | 0.5000 |" in card
    with pytest.raises(ValueError, match="owner/name"):
        model.push_to_hub("not a repo")
