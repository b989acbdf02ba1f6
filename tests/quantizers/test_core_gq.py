"""GaussianQuantizer: grouping, round trip, straight-through, fingerprinted codebook (docs/method.md section 4)."""

import math

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from gaussquant.quantizers.codebooks import CodebookSpec, codebook_fingerprint, gaussian_codebook
from gaussquant.quantizers.gaussian import GaussianBottleneck
from gaussquant.quantizers.gaussian_quant import GaussianQuantizer
from gaussquant.quantizers.search import gq_search


def _h(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("grouping", ["contiguous", "strided"])
def test_indices_are_the_search_of_each_groups_posterior(grouping):
    q = GaussianQuantizer(6, 50, 2, grouping=grouping, beta=0.5).eval()
    h = _h((2, 12, 3, 4))
    indices = q.quantize(h)
    assert indices.shape == (2, 3, 3, 4) and indices.dtype == torch.int64
    mean, logvar = h[:, :6], h[:, 6:].clamp(-30, 20)
    channels = {"contiguous": [[0, 1], [2, 3], [4, 5]], "strided": [[0, 3], [1, 4], [2, 5]]}[grouping]
    for g, ch in enumerate(channels):
        m = mean[:, ch].permute(0, 2, 3, 1).reshape(-1, 2)
        s = torch.exp(0.5 * logvar[:, ch]).permute(0, 2, 3, 1).reshape(-1, 2)
        expect = gq_search(m, s, q.codebook, beta=0.5).reshape(2, 3, 4)
        assert torch.equal(indices[:, g], expect)
        # dequantize puts codeword coordinate j of group g back on channel ch[j]
        z_hat = q.dequantize(indices)
        assert torch.equal(z_hat[:, ch].permute(0, 2, 3, 1), q.codebook[expect])


def test_train_and_eval_forward_are_the_quantized_latent():
    q = GaussianQuantizer(8, 300, 4)
    h = _h((2, 7, 16))
    train = q.train()(h)
    evald = q.eval()(h)
    assert torch.equal(train.z_hat, evald.z_hat)
    assert torch.equal(q.dequantize(q.quantize(h)), evald.z_hat)
    assert evald.indices.shape == (2, 7, 2)
    assert evald.losses == {}
    assert 0 < evald.stats["usage"] <= 28 / 300 + 1e-6 and evald.stats["perplexity"] >= 1
    assert evald.kl_bits.shape == (2, 7, 2)
    assert q.bits_per_token == pytest.approx(2 * math.log2(300))


def test_straight_through_forwards_the_codeword_and_backpropagates_to_the_sample():
    q = GaussianQuantizer(4, 64, 2, straight_through=True).train()
    h = _h((2, 8, 3, 3)).requires_grad_(True)
    out = q(h, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.z_hat, q.dequantize(out.indices))
    out.z_hat.sum().backward()
    # d z_hat / d mean = 1; d z_hat / d logvar = eps * std / 2 (the reparameterised sample)
    torch.testing.assert_close(h.grad[:, :4], torch.ones(2, 4, 3, 3))
    eps = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(h.grad[:, 4:], eps * torch.exp(0.5 * h[:, 4:].detach()) * 0.5)
    plain = GaussianQuantizer(4, 64, 2)(h)
    assert not plain.z_hat.requires_grad


def test_target_bits_adds_a_rate_loss_and_a_controller():
    q = GaussianQuantizer(4, 16, 2, target_bits=4.0)
    out = q(_h((2, 8, 2, 2)))
    assert set(out.losses) == {"rate"} and "multiplier" in out.stats
    q.update_rate_controller(out.kl_bits)
    assert "rate_controller.multiplier" in q.state_dict()


def test_spec_fingerprint_and_explicit_codebook():
    q = GaussianQuantizer(4, 100, 4, seed=3)
    assert q.spec == CodebookSpec("sobol", 100, 4, 3)
    assert q.fingerprint == codebook_fingerprint(gaussian_codebook(100, 4, seed=3))
    explicit = gaussian_codebook(100, 4, method="normal", seed=1)
    e = GaussianQuantizer(4, 100, 4, codebook=explicit)
    assert e.spec is None and torch.equal(e.codebook, explicit)
    assert e.fingerprint == codebook_fingerprint(explicit)
    with pytest.raises(ValueError, match=r"\(100, 4\)"):
        GaussianQuantizer(4, 100, 4, codebook=explicit[:50])


def test_state_round_trip_including_safetensors():
    q = GaussianQuantizer(4, 40, 2, seed=5)
    fresh = GaussianQuantizer(4, 40, 2, seed=5)
    fresh.load_state_dict(st_load(st_save(q.state_dict())), strict=True)
    h = _h((1, 8, 2, 2))
    assert torch.equal(fresh(h).indices, q(h).indices)


def test_loading_a_codebook_from_another_spec_is_an_error_that_says_so():
    state = GaussianQuantizer(4, 40, 2, seed=5).state_dict()
    with pytest.raises(RuntimeError, match="not the codebook this quantizer was built with"):
        GaussianQuantizer(4, 40, 2, seed=6).load_state_dict(state)
    tampered = dict(state)
    tampered["codebook"] = state["codebook"] + 1e-3
    with pytest.raises(RuntimeError, match="does not match the fingerprint stored with it"):
        GaussianQuantizer(4, 40, 2, seed=5).load_state_dict(tampered)
    no_fingerprint = {k: v for k, v in state.items() if k != "codebook_sha256"}
    with pytest.raises(RuntimeError, match="codebook_sha256"):
        GaussianQuantizer(4, 40, 2, seed=5).load_state_dict(no_fingerprint)


def test_from_bottleneck_keeps_channels_and_grouping():
    bn = GaussianBottleneck(8, 4, target_bits=6.0, grouping="strided")
    q = GaussianQuantizer.from_bottleneck(bn, 64)
    assert (q.latent_channels, q.codebook_dim, q.grouping, q.codebook_size) == (8, 4, "strided", 64)
    h = _h((2, 16, 2, 2))
    torch.testing.assert_close(q(h).kl_bits, bn(h).kl_bits)


def test_bad_arguments_say_what_is_wrong():
    with pytest.raises(ValueError, match="must divide"):
        GaussianQuantizer(6, 16, 4)
    with pytest.raises(ValueError, match="K >= 2"):
        GaussianQuantizer(4, 1, 2)
    with pytest.raises(ValueError, match="beta"):
        GaussianQuantizer(4, 16, 2, beta=-1.0)
    with pytest.raises(ValueError, match="rule"):
        GaussianQuantizer(4, 16, 2, rule="cosine")
    q = GaussianQuantizer(4, 16, 2)
    with pytest.raises(ValueError, match="8 latent channels"):
        q(_h((1, 4, 2, 2)))
    with pytest.raises(ValueError, match="out of range"):
        q.dequantize(torch.full((1, 2, 2, 2), 16))
    with pytest.raises(ValueError, match="NaN"):
        q(torch.full((1, 8, 2, 2), float("nan")))
