"""Folder start-up that scales: one walk, a cache keyed by directory times, ranks sharing one listing,
no decode of the eval split at start, persistent workers that still see each epoch."""

from __future__ import annotations

import os
import socket
import time

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

from gaussquant.data import file_list
from gaussquant.data.config import DataConfig, build_dataset
from gaussquant.data.file_list import CACHE_DIRNAME, image_file_index
from gaussquant.data.folder import ImageFolderDataset
from gaussquant.data.sampler import ResumableSampler, default_num_workers, make_loader


def _png(path, seed: int, size=(20, 28)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)


@pytest.fixture()
def tree(tmp_path):
    root = tmp_path / "imgs"
    for i in range(3):
        _png(root / "c0" / f"{i}.png", i)
        _png(root / "c1" / f"{i}.png", 10 + i)
    return root


def _no_walk(*_args, **_kwargs):
    raise AssertionError("the folder was walked although the cache is valid")


def _touch_later(path) -> None:
    # why: directory times have coarse resolution on some filesystems; make the change visible for sure
    later = time.time() + 5
    os.utime(path, (later, later))


def test_cache_is_written_beside_the_data_and_read_back(tree, monkeypatch):
    cache = tree / CACHE_DIRNAME
    files, bad = image_file_index(tree, cache_dir=cache)
    assert files == [f"c{c}/{i}.png" for c in (0, 1) for i in range(3)] and bad == {}
    assert len(list(cache.glob("files-*.json"))) == 1
    monkeypatch.setattr(file_list, "walk_images", _no_walk)
    assert image_file_index(tree, cache_dir=cache) == (files, {})


def test_a_changed_folder_is_listed_again(tree):
    cache = tree / CACHE_DIRNAME
    image_file_index(tree, cache_dir=cache)
    _png(tree / "c1" / "new.png", 99)
    _touch_later(tree / "c1")
    assert "c1/new.png" in image_file_index(tree, cache_dir=cache)[0]
    (tree / "c0" / "1.png").unlink()
    _touch_later(tree / "c0")
    files = image_file_index(tree, cache_dir=cache)[0]
    assert "c0/1.png" not in files and len(files) == 6
    _png(tree / "c2" / "0.png", 5)  # a new sub-folder changes the parent's time
    _touch_later(tree)
    assert "c2/0.png" in image_file_index(tree, cache_dir=cache)[0]


def test_header_results_are_cached_and_a_weaker_cache_does_not_serve_a_check(tree, monkeypatch):
    (tree / "c0" / "bad.png").write_bytes(b"not a png at all")
    ImageFolderDataset(tree, image_size=8, check_headers=False, cache_dir=tree / CACHE_DIRNAME)
    ds = ImageFolderDataset(tree, image_size=8, check_headers=True, cache_dir=tree / CACHE_DIRNAME)
    assert "c0/bad.png" not in ds.files and "c0/bad.png" in ds.skipped  # checked: the "none" cache was not used
    monkeypatch.setattr(file_list, "walk_images", _no_walk)
    again = ImageFolderDataset(tree, image_size=8, check_headers=True, cache_dir=tree / CACHE_DIRNAME)
    assert again.files == ds.files and "c0/bad.png" in again.skipped
    lazy = ImageFolderDataset(tree, image_size=8, check_headers=False, cache_dir=tree / CACHE_DIRNAME)
    assert lazy.files == ds.files  # a "headers" cache serves an unchecked request


def test_unwritable_cache_folder_still_lists(tree, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should go")
    files, _ = image_file_index(tree, cache_dir=blocker / "sub")
    assert len(files) == 6


def test_eval_split_is_not_decoded_at_start_and_corrupt_files_are_skipped_at_load(tmp_path, caplog):
    for i in range(4):
        _png(tmp_path / "train" / "a" / f"{i}.png", i)
        _png(tmp_path / "val" / "a" / f"{i}.png", 20 + i)
    good = (tmp_path / "val" / "a" / "0.png").read_bytes()
    (tmp_path / "val" / "a" / "0.png").write_bytes(good[: len(good) // 2])  # truncated: header fine
    train, evaluation = build_dataset(DataConfig(source="folder", path=str(tmp_path), image_size=16))
    assert len(train) == 4 and len(evaluation) == 4 and evaluation.skipped == {}  # nothing decoded yet
    first = evaluation[0]  # the truncated file is replaced by the next one when it is loaded
    assert torch.equal(first, evaluation[1]) and "a/0.png" in evaluation.skipped
    assert (tmp_path / "train" / CACHE_DIRNAME).is_dir() and (tmp_path / "val" / CACHE_DIRNAME).is_dir()
    off = DataConfig(source="folder", path=str(tmp_path / "val"), image_size=16, list_cache="off")
    flat_train, flat_eval = build_dataset(off)
    assert flat_train.files == flat_eval.files and flat_eval.mode == "center" and flat_train.mode == "random"


def test_persistent_workers_see_each_epoch_and_match_the_main_process(tree):
    dataset = ImageFolderDataset(tree, image_size=16, mode="random", flip=True, seed=4)
    runs = []
    for workers in (0, 1):
        sampler = ResumableSampler(len(dataset), seed=2, shuffle=False)
        loader = make_loader(dataset, sampler, batch_size=6, num_workers=workers)
        assert loader.persistent_workers == (workers > 0)
        epochs = [torch.cat(list(loader)) for _ in range(2)]  # the sampler moves to epoch 1 by itself
        runs.append(epochs)
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert not torch.equal(runs[0][0], runs[0][1]), "epoch 1 must draw new random crops"
    dataset.set_epoch(1)
    assert torch.equal(dataset[0], runs[0][1][0])  # (epoch, index) pairs = set_epoch + index


def test_automatic_worker_count(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert 1 <= default_num_workers() <= 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "64")
    assert default_num_workers() == 0
    memory = torch.arange(8.0)
    assert make_loader(memory, ResumableSampler(8), batch_size=2, num_workers=None).num_workers == 0
    with pytest.raises(ValueError, match="num_workers"):
        DataConfig(num_workers=-1)


def _rank(rank: int, port: int, roots: list[str], out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        files, _ = image_file_index(roots[rank], share=True)
        with open(os.path.join(out, f"rank{rank}.txt"), "w") as f:
            f.write("\n".join(files))
    finally:
        dist.destroy_process_group()


def test_ranks_share_rank_zero_listing(tree, tmp_path):
    other = tmp_path / "other"  # rank 1 is pointed elsewhere: it must still receive rank 0's list
    _png(other / "lonely.png", 1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank, args=(port, [str(tree), str(other)], str(tmp_path)), nprocs=2, join=True)
    lists = [(tmp_path / f"rank{r}.txt").read_text().split("\n") for r in (0, 1)]
    assert lists[0] == lists[1] == image_file_index(tree)[0]
