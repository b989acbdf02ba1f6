"""Tar shards: packing keeps every image's bytes, reading equals the folder, ranks split without overlap,
a resumed sampler continues at the exact next image, and training runs from shards."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from gaussquant.cli import main
from gaussquant.data.config import DataConfig, build_dataset
from gaussquant.data.folder import ImageFolderDataset
from gaussquant.data.sampler import ResumableSampler, make_loader
from gaussquant.data.shards import ImageShardDataset, write_shards


@pytest.fixture()
def imagenet(tmp_path):
    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for split, count in (("train", 11), ("val", 3)):
        for i in range(count):
            folder = root / split / f"n{i % 3}"
            folder.mkdir(parents=True, exist_ok=True)
            array = rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8)
            Image.fromarray(array).save(folder / f"{i}.{'png' if i % 2 else 'jpg'}")
    # a name over tar's 100-character field and a non-ASCII one: PAX headers, offsets must still be right
    for name in ("n0/" + "x" * 120 + ".png", "n1/café.png"):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / "train" / name)
    return root


def test_shards_hold_the_folder_and_read_back_as_it(imagenet, tmp_path):
    out = tmp_path / "shards"
    write_shards(imagenet, out, shard_size=4)
    assert sorted(p.name for p in out.glob("*.tar")) == [f"train-0000{i}.tar" for i in range(4)] + ["val-00000.tar"]
    with tarfile.open(out / "train-00001.tar") as tar:  # plain tar: members are the files, bytes unchanged
        member = tar.getmembers()[0]
        assert tar.extractfile(member).read() == (imagenet / "train" / member.name).read_bytes()
    for split in ("train", "val"):
        folder = ImageFolderDataset(imagenet / split, image_size=16, mode="random", flip=True, seed=3)
        shards = ImageShardDataset(out, split, image_size=16, mode="random", flip=True, seed=3)
        assert shards.files == folder.files
        for i in range(len(folder)):
            assert torch.equal(shards[(2, i)], folder[(2, i)])
    with pytest.raises(FileExistsError, match="already holds shards"):
        write_shards(imagenet, out)
    with pytest.raises(FileNotFoundError, match="not a finished shard folder"):
        ImageShardDataset(tmp_path, image_size=16)


def test_two_ranks_do_not_overlap_and_resume_is_exact(imagenet, tmp_path):
    write_shards(imagenet / "train", tmp_path / "s", shard_size=5)
    data = ImageShardDataset(tmp_path / "s", image_size=16, mode="random", seed=1)
    ranks = [ResumableSampler(len(data), seed=4, rank=r, world_size=2, drop_last=True) for r in (0, 1)]
    seen = [list(sampler) for sampler in ranks]
    assert not set(seen[0]) & set(seen[1]) and len(seen[0]) == len(seen[1]) == 6
    full = torch.cat(list(make_loader(data, ResumableSampler(len(data), seed=4), batch_size=3, num_workers=1)))
    sampler = ResumableSampler(len(data), seed=4)
    first = [data[(sampler.epoch, i)] for _, i in zip(range(4), sampler)]  # "crash" after 4 images
    state = sampler.state_dict()
    resumed = ResumableSampler(len(data), seed=4)
    resumed.load_state_dict(state)
    rest = torch.cat(list(make_loader(data, resumed, batch_size=3, num_workers=0)))
    assert torch.equal(torch.cat([torch.stack(first), rest]), full)


def test_cli_and_training_from_shards(imagenet, tmp_path, capsys):
    assert main(["shards", str(imagenet), "--out", str(tmp_path / "s"), "--shard-size", "6"]) == 0
    assert "train: 13, val: 3" in capsys.readouterr().out
    train, evaluation = build_dataset(DataConfig(source="shards", path=str(tmp_path / "s"), image_size=16))
    assert (len(train), len(evaluation), evaluation.mode) == (13, 3, "center")
    run = tmp_path / "run"
    argv = ["train", "--preset", "vit-tiny-gq", "--steps", "2", "--out", str(run), "--set", "data.source=shards",
            "--set", f"data.path={tmp_path / 's'}", "--set", "batch_size=4", "--set", "model.image_size=16",
            "--set", "data.image_size=16", "--set", "device=cpu"]
    assert main(argv) == 0
    assert (run / "checkpoints" / "latest").is_file()
    with pytest.raises(ValueError, match="needs path"):
        DataConfig(source="shards")
