"""PatchGAN discriminator: logit-map shapes, the three norms, ActNorm's data-dependent init, errors."""

import pytest
import torch

from gaussquant.models.discriminator import ActNorm, PatchDiscriminator


def _images(b: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("norm", ["actnorm", "batch", "group"])
def test_logit_map_shape_and_gradient(norm):
    disc = PatchDiscriminator(base_channels=8, n_layers=2, norm=norm).train()
    logits = disc(_images(2, 32))
    # 32 -> 16 -> 8 (stride 2) -> 7 -> 6 (4x4 stride-1 convs with padding 1)
    assert logits.shape == (2, 1, 6, 6)
    logits.mean().backward()
    assert all(p.grad is not None for p in disc.parameters())


def test_batchnorm_convs_have_no_bias_others_do():
    convs = [m for m in PatchDiscriminator(base_channels=8, n_layers=2, norm="batch").modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[0].bias is not None and convs[1].bias is None and convs[-1].bias is not None
    convs = [m for m in PatchDiscriminator(base_channels=8, n_layers=2).modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.bias is not None for c in convs)


def test_paper_discriminator_size_on_meta():
    with torch.device("meta"):
        disc = PatchDiscriminator(base_channels=160, n_layers=6).eval()  # eval: no ActNorm init on meta
        assert disc(torch.empty(1, 3, 256, 256)).shape == (1, 1, 2, 2)
    # channels 160 * min(2^n, 8): last hidden width is 1280
    assert disc.main[-1].in_channels == 1280


def test_actnorm_initialises_from_first_training_batch_only():
    norm = ActNorm(4).train()
    x = torch.randn(8, 4, 5, 5, generator=torch.Generator().manual_seed(0)) * 3 + 2
    y = norm(x)
    assert int(norm.initialized) == 1
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(dim=(0, 2, 3)), torch.ones(4), atol=1e-4, rtol=0)
    # the one-pass float64 moments equal the plain per-channel mean / std
    torch.testing.assert_close(norm.loc.detach().flatten(), -x.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(norm.scale.detach().flatten(), 1 / (x.transpose(0, 1).reshape(4, -1).std(dim=1) + 1e-6))
    loc = norm.loc.detach().clone()
    norm(x * 10)  # a second batch must not re-initialise
    assert torch.equal(norm.loc.detach(), loc)
    # the flag is checkpointed: a fresh module that loads it does not re-initialise either
    fresh = ActNorm(4)
    fresh.load_state_dict(norm.state_dict())
    fresh.train()(x * 10)
    assert torch.equal(fresh.loc.detach(), loc)


def test_actnorm_eval_before_init_is_identity():
    norm = ActNorm(3).eval()
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(norm(x), x) and int(norm.initialized) == 0


def test_errors():
    with pytest.raises(ValueError, match="norm must be one of"):
        PatchDiscriminator(norm="instance")
    disc = PatchDiscriminator(base_channels=8, n_layers=3)
    with pytest.raises(ValueError, match="H, W >= 24"):
        disc(_images(1, 16))
