"""Shards read over HTTP (a local ``http.server``) and ``pipe:cat``: the same images as the local read, ranks
disjoint, exact resume, a bounded cache, and one clear error for each way fetching can fail. No network."""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from PIL import Image

from gaussquant.cli import main
from gaussquant.data.config import DataConfig, build_dataset
from gaussquant.data.sampler import ResumableSampler, make_loader
from gaussquant.data.shard_source import ShardFetchError, ShardIntegrityError, ShardLocation
from gaussquant.data.shards import ImageShardDataset, write_shards


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # noqa: ANN002 (keep test output clean)
        pass


@pytest.fixture()
def packed(tmp_path):
    """A shard folder of 14 train images in 4 shards (4, 4, 4, 2) and 3 val images."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 14), ("val", 3)):
        for i in range(count):
            folder = tmp_path / "imgs" / split / f"n{i % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (18 + i, 22, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    write_shards(tmp_path / "imgs", tmp_path / "shards", shard_size=4)
    return tmp_path / "shards"


@pytest.fixture()
def serve(tmp_path):
    """``serve(folder) -> URL`` of an HTTP server on 127.0.0.1 for that folder, stopped after the test."""
    servers = []

    def start(folder):
        server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _sources(folder, serve):
    return {"http": serve(folder), "pipe": f"pipe:cat {folder}/{{}}"}


@pytest.mark.parametrize("kind", ["http", "pipe"])
def test_remote_reads_equal_the_local_read(packed, serve, tmp_path, kind):
    source = _sources(packed, serve)[kind]
    cache = tmp_path / f"cache-{kind}"
    for split in ("train", "val"):
        local = ImageShardDataset(packed, split, image_size=16, mode="random", flip=True, seed=3)
        remote = ImageShardDataset(source, split, image_size=16, mode="random", flip=True, seed=3, cache_dir=cache)
        assert remote.files == local.files and local.sample_groups is None
        assert remote.sample_groups == ([4, 4, 4, 2] if split == "train" else [3])
        for i in range(len(local)):
            assert torch.equal(remote[(1, i)], local[(1, i)])
    cached = sorted(p.name.split("-", 1)[1] for p in cache.rglob("*.tar"))
    assert cached == [f"train-0000{i}.tar" for i in range(4)] + ["val-00000.tar"]
    assert not list(cache.rglob("*.part-*"))  # downloads were renamed into place


def test_remote_ranks_are_disjoint_grouped_by_shard_and_resume_exactly(packed, serve, tmp_path):
    data = ImageShardDataset(serve(packed), image_size=16, mode="random", seed=1, cache_dir=tmp_path / "c")
    groups = data.sample_groups
    ranks = [ResumableSampler(len(data), seed=4, rank=r, world_size=2, drop_last=True, groups=groups, window=2)
             for r in (0, 1)]
    seen = [list(sampler) for sampler in ranks]
    assert not set(seen[0]) & set(seen[1]) and len(seen[0]) == len(seen[1]) == 7
    assert sorted(seen[0] + seen[1]) == list(range(14))
    order = ResumableSampler(len(data), seed=4, groups=groups, window=2).epoch_indices(0)
    shard_of = [s for s, size in enumerate(groups) for _ in range(size)]
    windows, current = [], []  # cut the order where every shard begun has been read whole
    for i in order:
        current.append(shard_of[i])
        if len(current) == sum(groups[s] for s in set(current)):
            windows.append(set(current))
            current = []
    assert len(windows) == 2 and all(len(w) == 2 for w in windows)  # two shards in use at a time
    assert order != ResumableSampler(len(data), seed=4, groups=groups, window=2).epoch_indices(1)

    def sampler():
        return ResumableSampler(len(data), seed=4, groups=groups, window=2)

    full = torch.cat(list(make_loader(data, sampler(), batch_size=3, num_workers=1)))  # a worker process
    first_sampler = sampler()
    first = [data[(first_sampler.epoch, i)] for _, i in zip(range(5), first_sampler)]  # "crash" after 5
    resumed = sampler()
    resumed.load_state_dict(first_sampler.state_dict())
    rest = torch.cat(list(make_loader(data, resumed, batch_size=3, num_workers=0)))
    assert torch.equal(torch.cat([torch.stack(first), rest]), full)
    with pytest.raises(ValueError, match="window=2"):
        ResumableSampler(len(data), seed=4, groups=groups, window=3).load_state_dict(first_sampler.state_dict())


def test_cache_stays_within_its_bound(packed, tmp_path):
    data = ImageShardDataset(f"pipe:cat {packed}/{{}}", image_size=16, cache_dir=tmp_path / "c", cache_bytes=1)
    local = ImageShardDataset(packed, image_size=16)
    data.cache.folder.mkdir(parents=True)
    crashed, live = data.cache.folder / "x-train-00000.tar.part-1", data.cache.folder / "y.tar.part-2"
    crashed.write_bytes(b"half")
    live.write_bytes(b"half")
    os.utime(crashed, (0, 0))  # untouched for decades: a crashed download's leftover
    for i in range(len(data)):  # shard after shard: each download evicts the one before
        assert torch.equal(data[i], local[i])
    assert len(list((tmp_path / "c").rglob("*.tar"))) == 1
    assert live.exists() and not crashed.exists()


def test_data_config_and_training_from_a_url(packed, serve, tmp_path, caplog):
    url = serve(packed)
    train, evaluation = build_dataset(DataConfig(source="shards", path=url, image_size=16,
                                                 shard_cache=str(tmp_path / "c"), shard_window=2))
    assert (len(train), len(evaluation), train.sample_groups) == (14, 3, [4, 4, 4, 2])
    assert "shard_cache_gb" not in caplog.text
    build_dataset(DataConfig(source="shards", path=url, image_size=16, shard_cache_gb=1e-7,
                             shard_cache=str(tmp_path / "c")))
    assert "holds fewer than 2 x shard_window=4 shards" in caplog.text  # a cache too small to work in
    run = tmp_path / "run"
    argv = ["train", "--preset", "vit-tiny-gq", "--steps", "2", "--out", str(run), "--set", "data.source=shards",
            "--set", f"data.path={url}", "--set", f"data.shard_cache={tmp_path / 'c2'}", "--set", "batch_size=4",
            "--set", "model.image_size=16", "--set", "data.image_size=16", "--set", "device=cpu",
            "--set", "data.num_workers=0", "--set", "data.shard_window=3"]
    assert main(argv) == 0
    (state_file,) = run.rglob("training_state.pt")
    assert torch.load(state_file, weights_only=True)["sampler"]["window"] == 3  # the order grouped by shards
    assert 1 <= len(list((tmp_path / "c2").rglob("*.tar"))) <= 5


def _copy(packed, tmp_path, name):
    copy = tmp_path / name
    shutil.copytree(packed, copy)
    return copy


@pytest.mark.parametrize("kind", ["http", "pipe"])
def test_truncated_and_changed_shards_are_errors(packed, serve, tmp_path, kind):
    bad = _copy(packed, tmp_path, "bad")
    data = (bad / "train-00001.tar").read_bytes()
    (bad / "train-00001.tar").write_bytes(data[: len(data) // 2])
    changed = bytearray((bad / "train-00002.tar").read_bytes())
    changed[1000] ^= 0xFF
    (bad / "train-00002.tar").write_bytes(bytes(changed))
    source = _sources(bad, serve)[kind]
    dataset = ImageShardDataset(ShardLocation(source, retries=1), image_size=16, cache_dir=tmp_path / "c")
    dataset[0]  # shard 0 is intact
    with pytest.raises(ShardIntegrityError, match=rf"train-00001\.tar is truncated: {len(data) // 2} of {len(data)}"):
        dataset[4]
    with pytest.raises(ShardIntegrityError, match=r"train-00002\.tar does not match the folder index"):
        dataset[8]
    assert len(list((tmp_path / "c").rglob("*.tar"))) == 1  # nothing unverified was kept
    with pytest.raises(ShardIntegrityError, match="is truncated"):  # a local copy: checked by size at start
        ImageShardDataset(bad, image_size=16)


def test_index_digest_mismatch_and_old_folders(packed, serve, tmp_path):
    bad = _copy(packed, tmp_path, "bad")
    index = (bad / "train.index.tsv").read_text()
    (bad / "train.index.tsv").write_text(index.replace("n0/", "n9/", 1))
    for root in (bad, f"pipe:cat {bad}/{{}}"):
        with pytest.raises(ShardIntegrityError, match=r"train\.index\.tsv does not match the folder index"):
            ImageShardDataset(root, image_size=16, cache_dir=tmp_path / "c")
    old = _copy(packed, tmp_path, "old")
    meta = json.loads((old / "shards.json").read_text())
    del meta["files"]
    meta["version"] = 1
    (old / "shards.json").write_text(json.dumps(meta))
    assert len(ImageShardDataset(old, image_size=16)) == 14  # version 1 still reads locally
    with pytest.raises(ValueError, match="packed without file digests"):
        ImageShardDataset(serve(old), image_size=16, cache_dir=tmp_path / "c")


def test_unreachable_url_failed_pipe_and_bad_specs(packed, serve, tmp_path, caplog):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/shards"
    with pytest.raises(ShardFetchError, match=rf"cannot reach {url}/shards\.json \(.*\); check the address"):
        ImageShardDataset(ShardLocation(url, retries=1), image_size=16, cache_dir=tmp_path / "c")
    with pytest.raises(ShardFetchError, match=r"/nothing/shards\.json: the server answered HTTP 404"):
        ImageShardDataset(serve(packed) + "nothing", image_size=16)
    assert "retrying" not in caplog.text  # a 4xx answer is not retried
    flaky = f"pipe:if [ -e {tmp_path}/once ]; then cat {packed}/{{}}; else touch {tmp_path}/once; exit 1; fi"
    assert len(ImageShardDataset(ShardLocation(flaky, retries=2), image_size=16)) == 14  # failed, then retried
    assert "retrying in 1 s" in caplog.text
    missing = tmp_path / "missing"
    with pytest.raises(ShardFetchError, match=r"pipe command .* failed with exit status 1: .*No such file"):
        ImageShardDataset(ShardLocation(f"pipe:cat {missing}/{{}}", retries=2), image_size=16)
    with pytest.raises(ValueError, match="has no {}"):
        ShardLocation("pipe:cat shards.json")
    # a pipe that works for the index but fails for one shard: the error surfaces at that image, not a skip
    script = f"pipe:case {{}} in *00001.tar) echo gone >&2; exit 3;; *) cat {packed}/{{}};; esac"
    dataset = ImageShardDataset(ShardLocation(script, retries=1), image_size=16, cache_dir=tmp_path / "c2")
    dataset[0]
    with pytest.raises(ShardFetchError, match="failed with exit status 3: gone"):
        dataset[5]
    assert dataset.skipped == {}
