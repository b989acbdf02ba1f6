"""The adaptive TDC controller and the band / aggregate-posterior statistics the bottleneck reports."""

import math

import pytest
import torch

from gaussquant.quantizers.build import GaussianConfig, build_bottleneck
from gaussquant.quantizers.gaussian import (AdaptiveRateController, GaussianBottleneck, RateController, band_stats,
                                            posterior_stats)
from gaussquant.quantizers.posterior import DiagonalGaussian

F = 1.01


def test_adaptive_weights_grow_with_the_distance_to_the_band():
    rc = AdaptiveRateController(target_bits=8.0, tolerance_bits=0.5, factor=F)
    rc.penalty_above.fill_(2.0)
    rc.penalty_below.fill_(0.5)
    kl = torch.tensor([[9.5, 8.2, 5.5, 7.5]])
    # 9.5: excess (9.5 - 8.5) / 0.5 = 2 -> 1 + 2 * 2 = 5; 8.2 and 7.5 (edge): 1; 5.5: deficit 4 -> 1 - 0.5 * 4 = -1
    assert rc.weights(kl).tolist() == [[5.0, 1.0, -1.0, 1.0]]
    kl.requires_grad_(True)
    rc.multiplier.fill_(2.0)
    loss = rc.loss(kl)
    assert loss.item() == pytest.approx(2.0 * (5 * 9.5 + 8.2 - 5.5 + 7.5))
    loss.backward()  # a token far below the band gets a negative gradient: the loss rewards its KL
    torch.testing.assert_close(kl.grad, torch.tensor([[10.0, 2.0, -2.0, 2.0]]))


def test_adaptive_steps_grow_with_the_violation():
    rc = AdaptiveRateController(target_bits=8.0, tolerance_bits=0.5, factor=F, out_of_band_goal=0.2, max_gain=4.0)
    rc.update(torch.full((2, 3), 10.0))  # mean error (10 - 8) / 0.5 = 4; all above (1 - 0.2) / 0.2 = 4; none below
    assert rc.multiplier.item() == pytest.approx(F**4)
    assert rc.penalty_above.item() == pytest.approx(F**4)
    assert rc.penalty_below.item() == pytest.approx(F**-1)
    rc = AdaptiveRateController(target_bits=8.0, tolerance_bits=0.5, factor=F)
    rc.update(torch.tensor([[7.0, 8.1, 8.2, 8.3, 8.4]]))  # mean 8.0: lambda stays; below 1/5 = goal: rho stays
    assert rc.multiplier.item() == pytest.approx(1.0)
    assert rc.penalty_below.item() == pytest.approx(1.0)
    assert rc.penalty_above.item() == pytest.approx(F**-1)
    reference = RateController(target_bits=8.0, factor=F)
    reference.update(torch.full((2, 3), 10.0))
    assert reference.multiplier.item() == pytest.approx(F)  # the reference's step ignores the size of the error


def test_adaptive_update_never_syncs_with_the_host(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("host sync")

    rc = AdaptiveRateController(target_bits=3.0)
    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    rc.update(torch.rand(4, 5, 6) * 6)
    rc.loss(torch.rand(4, 5, 6))


def test_controller_is_chosen_by_config_and_checkpointed():
    b = build_bottleneck(GaussianConfig(latent_channels=4, codebook_dim=4, target_bits=8.0, controller="adaptive"))
    assert isinstance(b.rate_controller, AdaptiveRateController)
    assert {"rate_controller.penalty_above", "rate_controller.penalty_below"} <= set(b.state_dict())
    assert isinstance(build_bottleneck(GaussianConfig(latent_channels=4, codebook_dim=4)).rate_controller, RateController)
    with pytest.raises(ValueError, match="controller must be one of"):
        GaussianBottleneck(4, 4, target_bits=8.0, controller="pid")
    with pytest.raises(ValueError, match="tolerance_bits > 0"):
        AdaptiveRateController(target_bits=8.0, tolerance_bits=0.0)


def test_band_stats_by_hand():
    kl = torch.tensor([[[7.0, 8.0]], [[9.0, 8.4]]])  # (B=2, tokens=1, G=2); band [7.5, 8.5]
    s = band_stats(kl, 8.0, 0.5)
    assert (s["kl_in_band"].item(), s["kl_above_band"].item(), s["kl_below_band"].item()) == (0.5, 0.25, 0.25)
    assert s["kl_group_mean_max"].item() == pytest.approx(8.2)  # group means: (7 + 9) / 2 = 8, (8 + 8.4) / 2
    assert 8.4 < s["kl_bits_p99"].item() <= 9.0


def test_posterior_stats_by_hand():
    post = DiagonalGaussian(torch.tensor([[[1.0, -1.0]]]), torch.zeros(1, 1, 2))
    s = posterior_stats(post)
    assert s["posterior_mean_mean"].item() == 0.0
    assert s["posterior_mean_std"].item() == pytest.approx(math.sqrt(2.0))  # unbiased std of {1, -1}
    assert s["posterior_std_mean"].item() == 1.0
    assert s["aggregate_var"].item() == pytest.approx(3.0)


def test_bottleneck_reports_band_and_posterior_stats():
    b = GaussianBottleneck(4, 2, target_bits=2.0)
    out = b(torch.randn(2, 8, 3, 3))
    for key in ("kl_in_band", "kl_bits_p99", "posterior_mean_std", "aggregate_var", "multiplier_max"):
        assert out.stats[key].numel() == 1
    vanilla = GaussianBottleneck(4, 2, kl_weight=0.1)(torch.randn(2, 8, 3, 3))
    assert "kl_in_band" not in vanilla.stats and "aggregate_var" in vanilla.stats
