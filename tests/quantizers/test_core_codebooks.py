"""Gaussian codebooks: the reference recipe bit for bit, fingerprints, specs (docs/method.md section 4)."""

import hashlib
import logging

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch

from gaussquant.quantizers.codebooks import CodebookSpec, codebook_fingerprint, gaussian_codebook

# Pinned so that a change in PyTorch's Sobol generator (or in our recipe) is caught, not silently used.
PAPER_D16_SHA256 = "effbb50723ff7d93c536130bc3b48657d8e3bd8a7458dfe4882910c843eb95c8"


def _recipe(k, d, seed):
    # The recipe written out independently: float32 Sobol points, scipy's inverse CDF in float64, float32.
    u = torch.quasirandom.SobolEngine(d, scramble=True, seed=seed).draw(k, dtype=torch.float32)
    return torch.from_numpy(scipy.special.ndtri(u.numpy().astype(np.float64)).astype(np.float32))


@pytest.mark.parametrize("k,d", [(2, 1), (1000, 4), (4096, 8), (777, 16)])
def test_sobol_codebook_is_the_reference_recipe_bit_for_bit(k, d):
    codebook = gaussian_codebook(k, d)
    assert codebook.dtype == torch.float32 and codebook.shape == (k, d)
    assert torch.equal(codebook, _recipe(k, d, 42))
    assert torch.equal(codebook, gaussian_codebook(k, d, method="sobol", seed=42))


def test_float64_sobol_points_would_change_codewords():
    u64 = torch.quasirandom.SobolEngine(16, scramble=True, seed=42).draw(4096, dtype=torch.float64)
    other = torch.special.ndtri(u64).float()
    assert not torch.equal(other, gaussian_codebook(4096, 16))


# SHA-256 of the float32 little-endian bytes of sobol codebooks, computed outside gaussquant (the
# independent recipe in _independent_sha256 below, torch 2.x SobolEngine + scipy.stats.norm.ppf + hashlib).
# The paper's K = 2^16 codebooks for d in {16, 8, 4, 1}, plus a few other sizes and seeds.
PINNED_SHA256 = {
    (65536, 16, 42): PAPER_D16_SHA256,
    (65536, 8, 42): "e8a016842c323b79581e085a85ed63788b917c439cc7c85d2d38c7f56ba6e42b",
    (65536, 4, 42): "984ac78517a6dfa0a335e335071ccb54ad877f4b58169699c5a7d544dea28069",
    (65536, 1, 42): "8566b45d3ecbcfab2199534355b8e33f61ffe9f7c889cb77afe3f99216d99287",
    (1000, 4, 7): "bd2bf4483ab3e182526f34d719ee6b4c0657f29e9523d651638c2dc0442b1ca6",
    (4096, 8, 0): "968a96b0bf84ba2e2dd410ae1a7c6eeec8c7a8a37900cd673c70e546b75a8c57",
}


def _independent_sha256(k: int, d: int, seed: int) -> str:
    """The reference's recipe with no gaussquant code: scrambled Sobol points drawn in float32, the normal
    inverse CDF (scipy.stats.norm.ppf) in float64, cast to float32, hashed as little-endian bytes."""
    u = torch.quasirandom.SobolEngine(d, scramble=True, seed=seed).draw(k, dtype=torch.float32).numpy()
    assert ((u > 0) & (u < 1)).all()  # no clamped edge value in these cases
    codebook = scipy.stats.norm.ppf(u.astype(np.float64)).astype("<f4")
    return hashlib.sha256(np.ascontiguousarray(codebook).tobytes()).hexdigest()


@pytest.mark.parametrize("k,d,seed", list(PINNED_SHA256))
def test_codebook_fingerprint_is_pinned_and_computed_independently(k, d, seed):
    """The pinned digests are reproduced by the independent recipe (so a change in PyTorch's Sobol engine
    or scipy is caught here) and by gaussquant's codebook and fingerprint (so a change in our recipe, e.g.
    Sobol points drawn in float64, torch's ndtri in float32, a dropped scramble or seed, or a fingerprint
    of other bytes, is caught)."""
    assert _independent_sha256(k, d, seed) == PINNED_SHA256[(k, d, seed)]
    codebook = gaussian_codebook(k, d, seed=seed)
    assert codebook_fingerprint(codebook) == PINNED_SHA256[(k, d, seed)]


def test_paper_codebook_is_roughly_standard_normal():
    codebook = gaussian_codebook(2**16, 16)
    assert torch.isfinite(codebook).all()
    assert abs(float(codebook.mean())) < 0.01 and abs(float(codebook.std()) - 1) < 0.01


def test_any_k_is_a_prefix_of_a_larger_codebook():
    assert torch.equal(gaussian_codebook(1000, 8), gaussian_codebook(1024, 8)[:1000])


def test_sobol_values_rounding_to_one_are_clamped_with_a_warning(caplog):
    # seed 2, d 16: one of the first 4096 float32 Sobol values rounds to exactly 1.0 (ndtri would be +inf)
    u = torch.quasirandom.SobolEngine(16, scramble=True, seed=2).draw(4096, dtype=torch.float32)
    assert int((u >= 1).sum()) == 1
    with caplog.at_level(logging.WARNING):
        codebook = gaussian_codebook(4096, 16, seed=2)
    assert torch.isfinite(codebook).all()
    assert "clamped" in caplog.text
    finite = u < 1
    assert torch.equal(codebook[finite], _recipe(4096, 16, 2)[finite])  # every other value is untouched


def test_normal_codebook_uses_a_local_generator():
    state = torch.get_rng_state()
    a = gaussian_codebook(100, 4, method="normal", seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, gaussian_codebook(100, 4, method="normal", seed=3))
    assert not torch.equal(a, gaussian_codebook(100, 4, method="normal", seed=4))
    assert not torch.equal(gaussian_codebook(100, 4, seed=1), gaussian_codebook(100, 4, seed=2))


def test_fingerprint_is_of_float32_bytes():
    codebook = gaussian_codebook(64, 4)
    fp = codebook_fingerprint(codebook)
    assert len(fp) == 64 and fp == codebook_fingerprint(codebook.double())
    assert fp == codebook_fingerprint(codebook.t().contiguous().t())  # layout does not matter
    nudged = codebook.clone()
    nudged[5, 2] = torch.nextafter(nudged[5, 2], torch.tensor(10.0))
    assert codebook_fingerprint(nudged) != fp


def test_spec_builds_and_validates():
    spec = CodebookSpec("sobol", 300, 4, 7)
    assert torch.equal(spec.build(), gaussian_codebook(300, 4, seed=7))
    assert CodebookSpec(**spec.to_dict()) == spec
    with pytest.raises(ValueError, match="K >= 2"):
        CodebookSpec("sobol", 1, 4)
    with pytest.raises(ValueError, match="method"):
        CodebookSpec("uniform", 16, 4)
    with pytest.raises(ValueError, match="K >= 2"):
        gaussian_codebook(1, 4)
    with pytest.raises(ValueError, match="codebook_dim"):
        gaussian_codebook(16, 0)
    with pytest.raises(ValueError, match="method"):
        gaussian_codebook(16, 4, method="halton")
