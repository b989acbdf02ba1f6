"""GaussianQuantizer: grouping, round trip, straight-through, fingerprinted codebook (docs/method.md section 4)."""

import math

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from gaussquant.quantizers.codebooks import CodebookSpec, codebook_fingerprint, gaussian_codebook
from gaussquant.quantizers.gaussian import GaussianBottleneck, RateController
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


def _kl_bits_by_hand(mean: list[float], logvar: list[float]) -> float:
    """KL(N(mean, exp(logvar)) || N(0, I)) of one group, in bits, from the closed form (docs/method.md section 2)."""
    nats = sum(0.5 * (m * m + math.exp(lv) - 1.0 - lv) for m, lv in zip(mean, logvar))
    return nats / math.log(2.0)


def test_target_bits_rate_value_and_one_update_by_hand():
    """The rate is lambda * mean over images of the band-weighted sum of group KLs in bits, and one update
    moves each multiplier by exactly f in the direction the method fixes (docs/method.md section 3).

    Expected values are computed here from the closed-form KL, not by the library. Catches: KL in nats
    instead of bits, a wrong per-image reduction (mean instead of sum over groups), weights assigned to the
    wrong side of the band, an update in the wrong direction or by the wrong factor, and the multipliers not
    reaching the loss.
    """
    t, tau, f = 4.0, 0.5, 1.01  # GaussianQuantizer's controller defaults: band [3.5, 4.5]
    q = GaussianQuantizer(4, 16, 2, target_bits=t)
    # (B=2, 2C=8, H=1, W=2): channels 0-3 mean, 4-7 logvar; contiguous groups {0, 1} and {2, 3}
    mean = [[[2.0, 1.0], [2.0, 0.5], [2.0, 1.0], [1.2, 0.3]], [[0.1, 2.5], [0.2, 0.0], [1.0, 1.5], [1.0, 1.5]]]
    logvar = [[[0.0, -1.0], [0.0, 0.5], [0.0, 0.0], [0.0, -0.5]], [[0.0, 0.0], [0.3, 0.0], [-2.0, 0.0], [0.0, 0.0]]]
    h = torch.cat([torch.tensor(mean)[:, :, None, :], torch.tensor(logvar)[:, :, None, :]], dim=1)
    expect = [[[_kl_bits_by_hand([mean[b][2 * g][w], mean[b][2 * g + 1][w]],
                                 [logvar[b][2 * g][w], logvar[b][2 * g + 1][w]]) for g in range(2)]
               for w in range(2)] for b in range(2)]  # (B, W, G) as kl_bits is (B, H=1, W, G)
    flat = [v for b in expect for w in b for v in w]
    assert max(flat) > t + tau and min(flat) < t - tau and any(t - tau <= v <= t + tau for v in flat)
    out = q(h)
    torch.testing.assert_close(out.kl_bits, torch.tensor(expect)[:, None], rtol=1e-6, atol=1e-6)
    # all multipliers start at 1: the rate is the batch mean of each image's summed KL
    rate0 = sum(sum(v for w in b for v in w) for b in expect) / 2
    assert out.losses["rate"].item() == pytest.approx(rate0, rel=1e-6)

    q.update_rate_controller(out.kl_bits)
    mean_kl = sum(flat) / len(flat)
    lam = f if mean_kl > t else 1 / f
    lam_max, lam_min = f, 1 / f  # some group above the band, some below
    rc = q.rate_controller
    assert rc.multiplier.item() == pytest.approx(lam, rel=1e-6)
    assert rc.multiplier_max.item() == pytest.approx(lam_max, rel=1e-6)
    assert rc.multiplier_min.item() == pytest.approx(lam_min, rel=1e-6)

    def weight(v):
        return lam_max if v > t + tau else lam_min if v < t - tau else 1.0

    rate1 = lam * sum(sum(weight(v) * v for w in b for v in w) for b in expect) / 2
    assert q(h).losses["rate"].item() == pytest.approx(rate1, rel=1e-6)
    assert "rate_controller.multiplier" in q.state_dict()


def test_rate_controller_moves_by_the_factor_and_respects_its_clamps():
    """Repeated updates multiply by exactly f per step until the clamps: lambda in multiplier_clamp,
    lambda_max in [1, 1e3], lambda_min in [1e-3, 1] (docs/method.md section 3).

    Catches: a missing or wrong clamp, lambda_max falling below 1 or lambda_min rising above 1, a factor
    applied twice, and the mean decision using the max or min instead of the mean.
    """
    rc = RateController(4.0, tolerance_bits=0.5, factor=10.0, multiplier_clamp=(0.01, 100.0))
    above = torch.full((2, 3), 9.0)  # every group above the band
    history = []
    for _ in range(4):
        rc.update(above)
        history.append((rc.multiplier.item(), rc.multiplier_max.item(), rc.multiplier_min.item()))
    # lambda up to its clamp 100, lambda_max up to 1e3, lambda_min pushed up but held at 1
    expect = [(10.0, 10.0, 1.0), (100.0, 100.0, 1.0), (100.0, 1000.0, 1.0), (100.0, 1000.0, 1.0)]
    for got, want in zip(history, expect):
        assert got == pytest.approx(want, rel=1e-6)
    below = torch.tensor([[0.0, 0.5, 3.0]])  # every group below the band
    for want in [(10.0, 100.0, 0.1), (1.0, 10.0, 0.01), (0.1, 1.0, 0.001), (0.01, 1.0, 0.001), (0.01, 1.0, 0.001)]:
        rc.update(below)
        assert (rc.multiplier.item(), rc.multiplier_max.item(), rc.multiplier_min.item()) == pytest.approx(
            want, rel=1e-5)
    # a mean above T with a minimum below the band: lambda up, lambda_max down (no group above T + tau)
    mixed = torch.tensor([[4.4, 4.4, 4.4, 3.0]])  # mean 4.05 > T, max 4.4 inside, min 3.0 below
    rc.update(mixed)
    assert (rc.multiplier.item(), rc.multiplier_max.item(), rc.multiplier_min.item()) == pytest.approx(
        (0.1, 1.0, 0.001), rel=1e-5)


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
