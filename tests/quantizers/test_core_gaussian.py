"""Gaussian bottleneck, per-group KL and the TDC rate controller (docs/method.md sections 2-3)."""

import math

import pytest
import torch

from gaussquant.quantizers import gaussian as gaussian_module
from gaussquant.quantizers.gaussian import GaussianBottleneck, RateController
from gaussquant.quantizers.grouping import from_groups, to_groups
from gaussquant.quantizers.posterior import DiagonalGaussian

F = 1.01


def _buffers(rc):
    return rc.multiplier.item(), rc.multiplier_max.item(), rc.multiplier_min.item()


def test_update_rules_above_inside_and_below_the_band():
    rc = RateController(target_bits=10.0)
    rc.update(torch.full((2, 3), 12.0))  # mean > T, max > T + tau, min > T - tau
    assert _buffers(rc) == pytest.approx((F, F, 1.0))  # lambda_min *= f, then clamped to 1
    rc.update(torch.full((2, 3), 8.0))  # mean < T, max < T + tau, min < T - tau
    assert _buffers(rc) == pytest.approx((1.0, 1.0, 1 / F))
    rc.update(torch.tensor([[9.7, 10.2]]))  # inside the band, mean < T
    assert _buffers(rc) == pytest.approx((1 / F, 1.0, 1.0))
    rc.update(torch.tensor([[5.0, 20.0]]))  # mean > T, one group above, one below the band
    assert _buffers(rc) == pytest.approx((1.0, F, 1 / F))


def test_multipliers_are_clamped():
    rc = RateController(target_bits=4.0, factor=10.0, multiplier_clamp=(1e-2, 1e2))
    for _ in range(5):
        rc.update(torch.full((1, 1), 100.0))
    assert _buffers(rc) == pytest.approx((1e2, 1e3, 1.0))
    for _ in range(10):
        rc.update(torch.full((1, 1), 0.0))
    assert _buffers(rc) == pytest.approx((1e-2, 1.0, 1e-3))


def test_weights_and_loss():
    rc = RateController(target_bits=8.0)
    rc.multiplier.fill_(2.0)
    rc.multiplier_max.fill_(4.0)
    rc.multiplier_min.fill_(0.5)
    kl = torch.tensor([[[9.0, 8.2]], [[7.0, 8.5]]], requires_grad=True)  # (B=2, tokens=1, G=2)
    assert rc.weights(kl).tolist() == [[[4.0, 1.0]], [[0.5, 1.0]]]
    loss = rc.loss(kl)
    expected = 2.0 * ((4 * 9.0 + 8.2) + (0.5 * 7.0 + 8.5)) / 2
    assert loss.item() == pytest.approx(expected)
    loss.backward()  # the weights carry no gradient: d loss / d kl = multiplier * w / B
    torch.testing.assert_close(kl.grad, torch.tensor([[[4.0, 1.0]], [[0.5, 1.0]]]))


def test_update_never_syncs_with_the_host(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("host sync")

    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    rc = RateController(target_bits=3.0)
    rc.update(torch.rand(4, 5, 6) * 6)
    rc.loss(torch.rand(4, 5, 6))


def test_update_all_reduces_sum_count_max_min(monkeypatch):
    # Pretend a second rank holds one group with KL 30 bits: sum 30, count 1, 1 above the band, 0 below,
    # max 30, min 30.
    calls = []

    def fake_all_reduce(tensor, op):
        calls.append(op)
        other = {gaussian_module.dist.ReduceOp.SUM: torch.tensor([30.0, 1.0, 1.0, 0.0])}.get(op, torch.tensor(30.0))
        if op == gaussian_module.dist.ReduceOp.SUM:
            tensor.add_(other)
        elif op == gaussian_module.dist.ReduceOp.MAX:
            tensor.copy_(torch.maximum(tensor, other))
        else:
            tensor.copy_(torch.minimum(tensor, other))

    monkeypatch.setattr(gaussian_module.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(gaussian_module.dist, "all_reduce", fake_all_reduce)
    rc = RateController(target_bits=10.0)
    # local: 3 groups at 8 bits -> local mean 8 < T, but the global mean (24 + 30) / 4 = 13.5 > T
    rc.update(torch.full((1, 3), 8.0))
    assert len(calls) == 3
    assert _buffers(rc) == pytest.approx((F, F, 1 / F))


def test_controller_validates_arguments():
    with pytest.raises(ValueError, match="target_bits"):
        RateController(target_bits=0.0)
    with pytest.raises(ValueError, match="factor"):
        RateController(target_bits=4.0, factor=1.0)
    with pytest.raises(ValueError, match="kl_bits"):
        RateController(target_bits=4.0).update(torch.empty(0, 3))


@pytest.mark.parametrize("grouping", ["contiguous", "strided"])
def test_group_kl_is_the_sum_over_the_groups_channels(grouping):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(2, 24, 3, 5, generator=g)
    post = DiagonalGaussian.from_moments(h)
    per_dim = post.kl_bits().permute(0, 2, 3, 1)  # (B, H, W, C)
    group_kl = post.group_kl_bits(4, grouping)
    assert group_kl.shape == (2, 3, 5, 3)
    members = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]] if grouping == "contiguous" else [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]]
    for gi, channels in enumerate(members):
        torch.testing.assert_close(group_kl[..., gi], per_dim[..., channels].sum(-1))
    x = torch.arange(24.0).reshape(2, 12)
    assert torch.equal(from_groups(to_groups(x, 4, grouping), grouping), x)


def test_kl_in_bits_matches_the_closed_form():
    mean, logvar = torch.tensor([[0.5, -1.0]]), torch.tensor([[0.3, -2.0]])
    kl = DiagonalGaussian(mean, logvar).kl_bits()
    nats = 0.5 * (mean**2 + logvar.exp() - 1 - logvar)
    torch.testing.assert_close(kl, nats / math.log(2))


def test_bottleneck_layouts_modes_and_stats():
    bn = GaussianBottleneck(8, 4, target_bits=6.0)
    assert bn.in_channels == 16 and bn.num_groups == 2 and not bn.is_discrete
    g = torch.Generator().manual_seed(1)
    h = torch.randn(3, 16, 4, 4, generator=g)
    out = bn(h, generator=torch.Generator().manual_seed(5))
    assert out.z_hat.shape == (3, 8, 4, 4) and out.kl_bits.shape == (3, 4, 4, 2) and out.indices is None
    again = bn(h, generator=torch.Generator().manual_seed(5))
    assert torch.equal(out.z_hat, again.z_hat)
    assert not torch.equal(out.z_hat, out.posterior.mean)
    bn.eval()
    assert torch.equal(bn(h).z_hat, h[:, :8])
    tokens = bn(torch.randn(2, 7, 16, generator=g))
    assert tokens.z_hat.shape == (2, 7, 8) and tokens.kl_bits.shape == (2, 7, 2)
    for key in ("kl_bits_mean", "kl_bits_min", "kl_bits_max", "multiplier", "multiplier_max", "multiplier_min"):
        assert key in out.stats and not out.stats[key].requires_grad
    torch.testing.assert_close(out.losses["rate"], bn.rate_controller.loss(out.kl_bits))


def test_forward_does_not_update_the_controller_but_the_trainer_call_does():
    bn = GaussianBottleneck(4, 2, target_bits=1.0)
    h = torch.randn(2, 8, 3, 3) * 3
    out = bn(h)
    assert _buffers(bn.rate_controller) == (1.0, 1.0, 1.0)
    bn.update_rate_controller(out.kl_bits)
    assert _buffers(bn.rate_controller) != (1.0, 1.0, 1.0)
    state = bn.state_dict()
    assert {"rate_controller.multiplier", "rate_controller.multiplier_max", "rate_controller.multiplier_min"} <= set(state)
    fresh = GaussianBottleneck(4, 2, target_bits=1.0)
    fresh.load_state_dict(state)
    assert _buffers(fresh.rate_controller) == _buffers(bn.rate_controller)


def test_vanilla_bottleneck_has_a_fixed_kl_weight():
    bn = GaussianBottleneck(4, 1, kl_weight=0.25)
    assert bn.rate_controller is None
    h = torch.randn(2, 8, 3, 3, requires_grad=True)
    out = bn(h)
    torch.testing.assert_close(out.losses["rate"], 0.25 * out.kl_bits.sum(dim=(1, 2, 3)).mean())
    out.losses["rate"].backward()
    assert h.grad is not None
    bn.update_rate_controller(out.kl_bits)  # a no-op
    assert "multiplier" not in out.stats


def test_bottleneck_rejects_bad_arguments():
    with pytest.raises(ValueError, match="exactly one"):
        GaussianBottleneck(8, 4)
    with pytest.raises(ValueError, match="exactly one"):
        GaussianBottleneck(8, 4, target_bits=4.0, kl_weight=1.0)
    with pytest.raises(ValueError, match="must divide"):
        GaussianBottleneck(8, 3, target_bits=4.0)
    with pytest.raises(ValueError, match="grouping"):
        GaussianBottleneck(8, 4, target_bits=4.0, grouping="random")
    with pytest.raises(ValueError, match="16 latent channels"):
        GaussianBottleneck(8, 4, target_bits=4.0)(torch.randn(1, 8, 2, 2))
