"""One conformance suite over every bottleneck: the shared output type, shapes, index round trip, gradients."""

from __future__ import annotations

import pytest
import torch

from gaussquant.quantizers.base import BottleneckOutput, DiscreteBottleneck

B, H, W, L = 2, 3, 4, 5


def _gaussian():
    from gaussquant.quantizers.gaussian import GaussianBottleneck

    return GaussianBottleneck(latent_channels=8, codebook_dim=4, target_bits=4.0)


def _gq():
    from gaussquant.quantizers.gaussian_quant import GaussianQuantizer

    return GaussianQuantizer(latent_channels=8, codebook_size=64, codebook_dim=4)


def _gq_straight_through():
    from gaussquant.quantizers.gaussian_quant import GaussianQuantizer

    return GaussianQuantizer(latent_channels=8, codebook_size=64, codebook_dim=4, straight_through=True)


def _vq():
    from gaussquant.quantizers.vq import VectorQuantizer

    q = VectorQuantizer(8, 32, 4, ema=False, restart_threshold=0.0)
    with torch.no_grad():  # spread the codebook so the batch hits many codes
        q.codebook.copy_(torch.randn(32, 4, generator=torch.Generator().manual_seed(3)))
    return q


def _vq_ema_l2():
    from gaussquant.quantizers.vq import VectorQuantizer

    return VectorQuantizer(8, 16, 2, ema=True, l2_normalize=True, restart_threshold=0.5)


def _fsq():
    from gaussquant.quantizers.fsq import FiniteScalarQuantizer

    return FiniteScalarQuantizer([8, 5, 3], num_groups=2)


def _lfq():
    from gaussquant.quantizers.lfq import LookupFreeQuantizer

    return LookupFreeQuantizer(codebook_bits=4, num_groups=2)


def _bsq():
    from gaussquant.quantizers.bsq import BinarySphericalQuantizer

    return BinarySphericalQuantizer(8, codebook_bits=4)


def _tokenbridge():
    from gaussquant.quantizers.tokenbridge import TokenBridgeQuantizer

    return TokenBridgeQuantizer(4, codebook_bits=3)


# name -> (factory, trains through the quantizer: gradients must reach the encoder output)
CASES = {
    "gaussian": (_gaussian, True),
    "gq": (_gq, False),  # a converted model: no gradient by default
    "gq_straight_through": (_gq_straight_through, True),
    "vq": (_vq, True),
    "vq_ema_l2": (_vq_ema_l2, True),
    "fsq": (_fsq, True),
    "lfq": (_lfq, True),
    "bsq": (_bsq, True),
    "tokenbridge": (_tokenbridge, False),
}


@pytest.fixture(params=sorted(CASES))
def case(request):
    factory, grads = CASES[request.param]
    torch.manual_seed(0)  # module parameters only; inputs use local generators
    return request.param, factory(), grads


def _inputs(q, layout: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    shape = (B, q.in_channels, H, W) if layout == "cf" else (B, L, q.in_channels)
    return torch.randn(shape, generator=g) * 1.5


@pytest.mark.parametrize("layout", ["cf", "tl"])
def test_shapes_indices_and_round_trip(case, layout):
    name, q, _ = case
    h = _inputs(q, layout)
    q.eval()
    out = q(h)
    assert isinstance(out, BottleneckOutput)
    expect = (B, q.latent_channels, H, W) if layout == "cf" else (B, L, q.latent_channels)
    assert out.z_hat.shape == expect and out.z_hat.dtype == torch.float32
    for v in list(out.losses.values()) + list(out.stats.values()):
        assert v.dim() == 0
    assert all(not v.requires_grad for v in out.stats.values())
    if not isinstance(q, DiscreteBottleneck):
        assert out.indices is None
        return
    g_shape = (B, q.num_groups, H, W) if layout == "cf" else (B, L, q.num_groups)
    assert out.indices.shape == g_shape and out.indices.dtype == torch.int64
    assert int(out.indices.min()) >= 0 and int(out.indices.max()) < q.codebook_size
    indices = q.quantize(h)
    assert torch.equal(indices, out.indices)
    assert torch.equal(q.dequantize(indices), out.z_hat)  # exactly, not approximately
    assert q.bits_per_token > 0


def test_gradients_reach_encoder_output(case):
    name, q, grads = case
    q.train()
    h = _inputs(q, "cf").requires_grad_(True)
    out = q(h)
    total = out.z_hat.square().sum() + sum(v for v in out.losses.values() if v.requires_grad)
    if grads is False:
        assert not total.requires_grad, f"{name} is post-training: nothing should carry a gradient"
        return
    if grads is None and not total.requires_grad:
        pytest.skip(f"{name} in its default configuration does not train through the quantizer")
    total.backward()
    assert h.grad is not None and torch.isfinite(h.grad).all() and h.grad.abs().sum() > 0


def test_state_dict_round_trip(case):
    name, q, _ = case
    h = _inputs(q, "tl")
    q.train()
    q(h)  # move any running state (EMA, usage, controller) away from its initial value
    q.eval()
    state = q.state_dict()
    fresh = CASES[name][0]()
    fresh.load_state_dict(state, strict=True)
    fresh.eval()
    a, b = q(h), fresh(h)
    assert torch.equal(a.z_hat, b.z_hat)
    if a.indices is not None:
        assert torch.equal(a.indices, b.indices)


def test_fp32_quantization_under_bf16_autocast(case):
    name, q, _ = case
    h = _inputs(q, "cf")
    q.eval()
    ref = q(h)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = q(h)
        if isinstance(q, DiscreteBottleneck):
            indices = q.quantize(h)
    assert out.z_hat.dtype == torch.float32
    assert torch.equal(out.z_hat, ref.z_hat)
    if isinstance(q, DiscreteBottleneck):
        assert torch.equal(indices, ref.indices)
