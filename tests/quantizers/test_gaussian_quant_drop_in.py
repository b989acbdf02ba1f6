"""GaussianQuant follows vector-quantize-pytorch's call shape, side by side with the library's FSQ (and
VectorQuantize for the 3-tuple), and computes exactly what gaussquant's own GaussianBottleneck and
GaussianQuantizer compute (the mapping table in docs/convert_tokenize_eval.md)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file
from vector_quantize_pytorch import FSQ, VectorQuantize

from gaussquant import GaussianQuant
from gaussquant.quantizers.gaussian import GaussianBottleneck
from gaussquant.quantizers.gaussian_quant import GaussianQuantizer

DIM, K, D = 32, 256, 4  # GQ: 256 codewords of 4 dims per head; FSQ: levels (8, 8, 4) = 256 codes per head
LEVELS = [8, 8, 4]


def _x(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


LAYOUTS = {  # name -> (input shape, GaussianQuant / VectorQuantize layout flags)
    "tokens": ((2, 7, DIM), {}),
    "image": ((2, DIM, 4, 5), {"accept_image_fmap": True}),
    "channel-first tokens": ((2, DIM, 7), {"channel_last": False}),
}


@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("layout", ["tokens", "image"])
def test_same_call_shape_as_fsq(layout, heads):
    shape, flags = LAYOUTS[layout]
    x = _x(*shape)
    fsq = FSQ(LEVELS, dim=DIM, num_codebooks=heads)
    fsq_out, fsq_idx = fsq(x)  # FSQ detects (B, D, H, W) by rank; GaussianQuant is told, as VectorQuantize is
    gq = GaussianQuant(DIM, K, codebook_dim=D, heads=heads, **flags).convert().eval()
    quantized, indices, aux_loss = gq(x)
    assert quantized.shape == fsq_out.shape == x.shape
    assert indices.shape == fsq_idx.shape
    assert indices.dtype == torch.int64 and int(indices.min()) >= 0 and int(indices.max()) < K
    assert aux_loss.shape == () and float(aux_loss) == 0.0
    # round trip: indices -> codes gives the forward output (FSQ: up to float rounding; GQ: exactly)
    torch.testing.assert_close(fsq.indices_to_codes(fsq_idx), fsq_out)
    assert torch.equal(gq.indices_to_codes(indices), quantized)
    assert torch.equal(gq.get_output_from_indices(indices), quantized)
    # the same 3-tuple and index shape as VectorQuantize for these flags
    vq = VectorQuantize(DIM, K, heads=heads, **flags).eval()
    vq_out, vq_idx, vq_loss = vq(x)
    assert vq_out.shape == quantized.shape and vq_idx.shape == indices.shape and vq_loss.shape == aux_loss.shape


def test_channel_first_tokens_and_single_token_layouts():
    shape, flags = LAYOUTS["channel-first tokens"]
    x = _x(*shape)
    gq = GaussianQuant(DIM, K, codebook_dim=D, **flags).convert().eval()
    vq = VectorQuantize(DIM, K, **flags).eval()
    (q, i, _), (vq_q, vq_i, _) = gq(x), vq(x)
    assert q.shape == vq_q.shape == x.shape and i.shape == vq_i.shape == (2, 7)
    assert torch.equal(gq.indices_to_codes(i), q)
    one = GaussianQuant(DIM, K, codebook_dim=D, heads=2).convert().eval()
    q1, i1, _ = one(_x(3, DIM))
    assert q1.shape == (3, DIM) and i1.shape == (3, 2)
    assert torch.equal(one.indices_to_codes(i1), q1)


def test_gaussian_phase_is_the_library_gaussian_bottleneck():
    """Phase 1: sample / mean of GaussianBottleneck, aux_loss = rate_weight * its TDC rate loss."""
    gq = GaussianQuant(DIM, K, codebook_dim=D, heads=2, rate_weight=0.5)
    ref = GaussianBottleneck(2 * D, D, target_bits=8.0)  # target log2 K = 8 bits per group
    x = _x(2, 7, DIM)
    gq.train()
    quantized, indices, aux_loss = gq(x, update_rate=False, generator=torch.Generator().manual_seed(3))
    h = gq.project_in(x)
    out = ref.train()(h, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(quantized, gq.project_out(out.z_hat))
    torch.testing.assert_close(aux_loss, 0.5 * out.losses["rate"])
    assert aux_loss.shape == () and aux_loss.requires_grad
    aux_loss.backward()
    assert gq.project_in.weight.grad is not None and gq.project_in.weight.grad.abs().sum() > 0
    # the indices are the tokens the posterior would get if converted now
    lib = GaussianQuantizer(2 * D, K, D)
    assert torch.equal(indices, lib.quantize(h.detach()))
    gq.eval()
    torch.testing.assert_close(gq(x)[0], gq.project_out(h[..., : 2 * D]))  # eval: the posterior mean


def test_tdc_multipliers_step_in_train_mode_only():
    gq = GaussianQuant(DIM, K, codebook_dim=D)
    x = 10 * _x(4, 7, DIM)  # far above the 8-bit target: lambda must rise
    start = gq.gaussian.rate_controller.multiplier.clone()
    gq.eval()(x)
    gq.train()(x, update_rate=False)
    assert torch.equal(gq.gaussian.rate_controller.multiplier, start)
    assert gq.last_kl_bits.shape == (4, 7, 1)  # (B, N, heads)
    gq.update_rate_controller()  # the step it skipped, from the last call's KLs
    assert float(gq.gaussian.rate_controller.multiplier) == pytest.approx(float(start) * 1.01)
    start = gq.gaussian.rate_controller.multiplier.clone()
    quantized, _, aux_loss = gq.train()(x)
    assert float(gq.gaussian.rate_controller.multiplier) == pytest.approx(float(start) * 1.01)
    # the step inside forward must leave the graph usable: the usual loss.backward() right after the call
    (quantized.pow(2).mean() + aux_loss).backward()
    assert gq.project_in.weight.grad is not None
    no_idx = GaussianQuant(DIM, K, codebook_dim=D, return_indices=False)
    assert no_idx(x)[1] is None


def test_quantizing_phase_is_the_library_gaussian_quantizer():
    gq = GaussianQuant(DIM, K, codebook_dim=D, heads=2, rule="nearest", seed=7).convert().eval()
    lib = GaussianQuantizer(2 * D, K, D, rule="nearest", seed=7)
    x = _x(2, 7, DIM)
    quantized, indices, _ = gq(x)
    h = gq.project_in(x)
    assert torch.equal(indices, lib.quantize(h))
    assert torch.equal(gq.indices_to_codes(indices, project_out=False), lib.dequantize(indices))
    assert gq.bits_per_token == lib.bits_per_token == 16.0 and gq.codebook.shape == (K, D)


def test_phase_travels_with_the_state_dict(tmp_path):
    gq = GaussianQuant(DIM, K, codebook_dim=D).convert().eval()
    save_file(gq.state_dict(), str(tmp_path / "gq.safetensors"))
    fresh = GaussianQuant(DIM, K, codebook_dim=D).eval()
    assert not fresh.quantizing
    fresh.load_state_dict(load_file(str(tmp_path / "gq.safetensors")))
    assert fresh.quantizing
    x = _x(2, 7, DIM)
    assert torch.equal(fresh(x)[0], gq(x)[0])


def test_clear_errors():
    gq = GaussianQuant(DIM, K, codebook_dim=D, heads=2).convert()
    with pytest.raises(ValueError, match="dim=32"):
        gq(_x(2, 7, 16))
    with pytest.raises(ValueError, match="accept_image_fmap"):
        gq(_x(2, DIM, 4, 5))
    with pytest.raises(ValueError, match="heads axis of 2"):
        gq.indices_to_codes(torch.zeros(2, 7, dtype=torch.long))
    with pytest.raises(ValueError, match="out of range"):
        gq.indices_to_codes(torch.full((2, 7, 2), K))
    with pytest.raises(TypeError, match="integer"):
        gq.indices_to_codes(torch.zeros(2, 7, 2))
    with pytest.raises(ValueError, match="codebook_dim must be a positive integer"):
        GaussianQuant(DIM, K, codebook_dim=0)
    with pytest.raises(ValueError, match="codebook_size must be >= 2"):
        GaussianQuant(DIM, 1)
