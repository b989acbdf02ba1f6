"""ResumableSampler: determinism, sharding, exact resume; make_loader."""

from __future__ import annotations

import pytest
import torch

from gaussquant.data.sampler import ResumableSampler, make_loader


def test_permutation_per_epoch_and_seed():
    s = ResumableSampler(10, seed=0)
    e0 = list(s)
    e1 = list(s)  # iteration rolls over to the next epoch
    assert sorted(e0) == list(range(10)) and sorted(e1) == list(range(10)) and e0 != e1
    assert list(ResumableSampler(10, seed=0)) == e0
    assert list(ResumableSampler(10, seed=1)) != e0
    assert list(ResumableSampler(5, shuffle=False)) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("drop_last", [False, True])
def test_sharding_covers_dataset(drop_last):
    shards = [list(ResumableSampler(11, seed=3, rank=r, world_size=3, drop_last=drop_last)) for r in range(3)]
    assert len({len(s) for s in shards}) == 1
    seen = [i for s in shards for i in s]
    if drop_last:
        assert len(seen) == 9 and len(set(seen)) == 9
    else:
        assert set(seen) == set(range(11)) and len(seen) == 12


def test_resume_continues_at_exact_next_sample():
    full = ResumableSampler(13, seed=5, rank=1, world_size=2)
    reference = list(full) + list(full)  # two epochs
    s = ResumableSampler(13, seed=5, rank=1, world_size=2)
    it = iter(s)
    head = [next(it) for _ in range(4)]
    state = s.state_dict()
    resumed = ResumableSampler(13, seed=5, rank=1, world_size=2)
    resumed.load_state_dict(state)
    rest = list(resumed) + list(resumed)
    assert head + rest[: len(reference) - 4] == reference
    with pytest.raises(ValueError, match="world_size"):
        ResumableSampler(13, seed=5, world_size=1).load_state_dict(state)


def test_loader_batches_follow_sampler():
    data = torch.arange(20).float()
    sampler = ResumableSampler(20, seed=0)
    order = sampler.epoch_indices(0)
    batches = list(make_loader(data, sampler, batch_size=8))
    assert torch.cat(batches).long().tolist() == order


def test_two_workers_give_the_same_batches_as_none(tmp_path):
    import numpy as np
    from PIL import Image

    from gaussquant.data.folder import ImageFolderDataset

    for i in range(6):
        array = np.random.default_rng(i).integers(0, 256, (20, 30, 3), dtype=np.uint8)
        Image.fromarray(array).save(tmp_path / f"{i}.png")
    dataset = ImageFolderDataset(tmp_path, image_size=16, mode="random", flip=True, seed=1)
    runs = []
    for workers in (0, 2):
        sampler = ResumableSampler(len(dataset), seed=2)
        runs.append(torch.cat(list(make_loader(dataset, sampler, batch_size=4, num_workers=workers))))
    assert torch.equal(runs[0], runs[1])
