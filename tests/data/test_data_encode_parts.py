"""Parallel pre-tokenization: 2 gloo ranks write parts whose union equals the single-process tokens; a
killed run resumes; the folder reads back as one tokens file."""

from __future__ import annotations

import logging
import os
import socket

import numpy as np
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

from gaussquant.cli import main
from gaussquant.encode import encode_folder
from gaussquant.encode_parallel import encode_folder_parts
from gaussquant.models.presets import ModelConfig, build_autoencoder
from gaussquant.pretrained import save_pretrained
from gaussquant.quantizers.build import VQConfig, build_bottleneck
from gaussquant.tokens import load_token_parts, load_tokens

SIZE = 16


def _model(seed: int = 0):
    import torch

    torch.manual_seed(seed)  # weights of the tiny test model
    cfg = VQConfig(latent_channels=8, codebook_size=300, codebook_dim=4, seed=seed)
    mcfg = ModelConfig(arch="unet-tiny", image_size=SIZE)
    return build_autoencoder(mcfg, build_bottleneck(cfg)).eval(), mcfg, cfg


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(7):  # 7 images in parts of 2: 4 parts, the last one short
        folder = root / f"c{i % 2}"
        folder.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (SIZE + 6, SIZE, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def _rank(rank: int, port: int, images: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        encode_folder_parts(_model(0)[0], images, out, image_size=SIZE, batch_size=2, shard_size=2)
    finally:
        dist.destroy_process_group()


def test_two_ranks_write_the_single_process_tokens_and_resume(images, tmp_path, caplog):
    single = load_tokens(encode_folder(_model(0)[0], images, tmp_path / "one.npz", image_size=SIZE, batch_size=2))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "parts"
    mp.spawn(_rank, args=(port, str(images), str(out)), nprocs=2, join=True)
    assert sorted(p.name for p in out.iterdir()) == ["index.json"] + [f"part-00000{i}.npz" for i in range(4)]
    both = load_tokens(out)  # a folder reads as one tokens file
    assert both.file_names == single.file_names
    assert np.array_equal(both.indices, single.indices) and both.indices.dtype == single.indices.dtype
    assert both.model_fingerprint == single.model_fingerprint
    # a run killed while writing part 2, after part 3: part 2 is only a .partial, no index yet
    (out / "index.json").unlink()
    (out / "part-000002.npz").rename(out / "part-000002.npz.partial")
    kept = {p: (out / p).stat().st_mtime_ns for p in ("part-000000.npz", "part-000001.npz", "part-000003.npz")}
    with caplog.at_level(logging.INFO, logger="gaussquant.encode_parallel"):
        encode_folder_parts(_model(0)[0], images, out, image_size=SIZE, batch_size=2, shard_size=2)
    assert caplog.text.count("already written; skipped") == 3
    assert all((out / p).stat().st_mtime_ns == t for p, t in kept.items())
    assert not list(out.glob("*.partial"))
    again = load_token_parts(out)
    assert np.array_equal(again.indices, single.indices) and again.file_names == single.file_names


def test_parts_of_another_model_are_refused_and_an_unfinished_folder_is_not_read(images, tmp_path):
    out = tmp_path / "parts"
    encode_folder_parts(_model(0)[0], images, out, image_size=SIZE, batch_size=2, shard_size=4)
    with pytest.raises(ValueError, match="another model or other images"):
        encode_folder_parts(_model(1)[0], images, out, image_size=SIZE, batch_size=2, shard_size=4)
    with pytest.raises(ValueError, match="must be a folder"):
        encode_folder_parts(_model(0)[0], images, tmp_path / "t.npz", image_size=SIZE)
    (out / "index.json").unlink()
    with pytest.raises(FileNotFoundError, match="not a finished parallel encode"):
        load_tokens(out)


def test_cli_writes_parts_when_out_is_a_folder(images, tmp_path, capsys):
    model, mcfg, cfg = _model(0)
    save_pretrained(model, tmp_path / "m", model_config=mcfg, bottleneck_config=cfg)
    argv = ["encode", str(tmp_path / "m"), str(images), "--out", str(tmp_path / "tok"), "--device", "cpu",
            "--batch-size", "2", "--shard-size", "4"]
    assert main(argv) == 0
    assert "index.json" in capsys.readouterr().out
    tokens = load_tokens(tmp_path / "tok")
    assert tokens.num_images == 7 and len(list((tmp_path / "tok").glob("part-*.npz"))) == 2
    assert main(["decode", str(tmp_path / "m"), str(tmp_path / "tok"), "--out", str(tmp_path / "png"),
                 "--device", "cpu"]) == 0
    assert len(list((tmp_path / "png").rglob("*.png"))) == 7
