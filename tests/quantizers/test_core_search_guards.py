"""gq_search: a codebook changed behind the cache is never trusted; tiny float32 std gives the right tokens."""

import pytest
import torch

from gaussquant.quantizers.search import gq_search


def _data(d=2, k=64, n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, d, generator=g), torch.randn(n, d, generator=g), torch.rand(n, d, generator=g) + 0.1


@pytest.mark.parametrize("d", [1, 2, 4])
@pytest.mark.parametrize("write", ["data", "numpy", "index"])
def test_nan_written_into_the_codebook_after_a_search_is_caught(d, write):
    codebook, mean, std = _data(d)
    gq_search(mean, std, codebook)  # fills the per-codebook cache
    if write == "data":
        codebook.data[3, 0] = float("nan")  # bumps no version counter
    elif write == "numpy":
        codebook.numpy()[3, 0] = float("nan")
    else:
        codebook[3, 0] = float("nan")
    with pytest.raises(ValueError, match="codebook contains NaN"):
        gq_search(mean, std, codebook)


@pytest.mark.parametrize("d", [1, 3])
def test_a_finite_change_behind_the_cache_gives_fresh_tokens(d):
    codebook, mean, std = _data(d)
    gq_search(mean, std, codebook)
    codebook.numpy()[:] = -codebook.numpy()  # same tensor, same version, new values
    assert torch.equal(gq_search(mean, std, codebook), gq_search(mean, std, codebook.clone()))


@pytest.mark.parametrize("std_value", [1e-19, 1e-25, 1e-35])
def test_float32_search_with_tiny_std_matches_float64(std_value):
    codebook, mean, _ = _data(d=4, k=256, n=50)
    std = torch.full_like(mean, std_value)
    tokens = gq_search(mean, std, codebook)
    exact = gq_search(mean.double(), std.double(), codebook.double())
    assert torch.equal(tokens, exact)
    # as std -> 0 the log-ratio rule becomes the nearest codeword to the mean
    assert torch.equal(tokens, gq_search(mean, None, codebook, rule="nearest"))


def test_tiny_std_in_one_dimension_only():
    codebook, mean, std = _data(d=3, k=128, n=40)
    std[:, 1] = 1e-30
    assert torch.equal(gq_search(mean, std, codebook), gq_search(mean.double(), std.double(), codebook.double()))
