"""`gaussquant convert --data DIR` measures every image of a small folder, evenly spaced ones of a big one."""

import numpy as np
import pytest
from PIL import Image

from gaussquant.convert import evenly_spaced, sample_dataset


@pytest.mark.parametrize("n, k", [(21, 64), (21, 200), (21, 21), (5, 1000)])
def test_every_image_when_the_folder_holds_fewer_than_asked(n, k):
    assert evenly_spaced(n, k) == list(range(n))


@pytest.mark.parametrize("n, k", [(21, 7), (100, 64), (1000, 3), (65, 64)])
def test_evenly_spaced_distinct_indices_otherwise(n, k):
    picks = evenly_spaced(n, k)
    assert len(picks) == k == len(set(picks)) and picks == sorted(picks)
    assert 0 <= picks[0] and picks[-1] < n
    gaps = np.diff(picks)
    assert gaps.max() - gaps.min() <= 1  # as even as integers allow
    assert picks[0] <= n / k and n - 1 - picks[-1] <= n / k  # spread over the whole folder


def test_sample_dataset_takes_the_whole_small_folder(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(21):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(tmp_path / f"{i:02d}.png")
    assert len(sample_dataset(tmp_path, 16, 64)) == 21
    assert len(sample_dataset(tmp_path, 16, 200)) == 21
    sample = sample_dataset(tmp_path, 16, 5)
    assert len(sample) == 5 and sample.indices == [2, 6, 10, 14, 18]
