"""The prior's model: causal across positions and groups, reproducible sampling, raster order, presets."""

import numpy as np
import pytest
import torch

from gaussquant.prior.data import TokenLayout
from gaussquant.prior.model import PriorConfig, TokenPrior, prior_config


def _prior(**kw) -> TokenPrior:
    cfg = dict(codebook_size=7, num_groups=3, seq_len=5, n_layer=2, n_head=2, d_model=32)
    cfg.update(kw)
    return TokenPrior(PriorConfig(**cfg)).eval()


def test_logits_depend_only_on_earlier_positions_and_earlier_groups():
    model = _prior()
    x = torch.randint(0, 7, (4, 5, 3), generator=torch.Generator().manual_seed(0))
    changed = x.clone()
    changed[:, 2, 1] = (changed[:, 2, 1] + 1) % 7
    with torch.no_grad():
        diff = (model(x) - model(changed)).abs().amax(dim=(0, 3))  # (L, G)
    assert torch.all(diff[:2] == 0) and diff[2, 0] == 0 and diff[2, 1] == 0  # the past and group 1 itself
    assert diff[2, 2] > 0 and torch.all(diff[3:] > 0)  # later groups of the position and later positions see it


def test_untrained_prior_scores_near_the_rate_and_nll_matches_logits():
    model = _prior(seed=3)
    x = torch.randint(0, 7, (8, 5, 3), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        bits = model.nll_bits(x)  # (B,)
        logp = torch.log_softmax(model(x), dim=-1).gather(-1, x.unsqueeze(-1)).squeeze(-1).sum(dim=(1, 2))  # (B,)
    assert bits.shape == (8,)
    torch.testing.assert_close(bits, -logp / np.log(2))
    rate = 5 * 3 * np.log2(7)
    assert abs(float(bits.mean()) - rate) < 0.1 * rate  # small init: close to uniform


def test_sampling_is_reproducible_with_a_seed_and_in_range():
    model = _prior()
    draw = lambda seed, **kw: model.sample(6, generator=torch.Generator().manual_seed(seed), **kw)  # noqa: E731
    a, b, c = draw(0), draw(0), draw(1)
    assert a.shape == (6, 5, 3) and a.dtype == torch.long and int(a.min()) >= 0 and int(a.max()) < 7
    assert torch.equal(a, b) and not torch.equal(a, c)
    greedy = draw(5, top_k=1)  # top-k 1 is the argmax: the same whatever the seed
    assert torch.equal(greedy, draw(6, top_k=1))
    with pytest.raises(ValueError, match="temperature"):
        model.sample(1, temperature=0)


def test_construction_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b, c = _prior(seed=1), _prior(seed=1), _prior(seed=2)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.head_w2, b.head_w2) and not torch.equal(a.head_w2, c.head_w2)


def test_class_conditioning_and_bad_inputs():
    model = _prior(num_classes=2)
    x = torch.randint(0, 7, (2, 5, 3))
    with pytest.raises(ValueError, match="conditioned on 2 classes"):
        model(x)
    with torch.no_grad():
        diff = (model(x, torch.tensor([0, 0])) - model(x, torch.tensor([1, 1]))).abs().max()
    assert diff > 0  # the class changes every prediction, the first position included
    with pytest.raises(ValueError, match="indices must be"):
        _prior()(torch.zeros(1, 5, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="divisible"):
        PriorConfig(codebook_size=4, num_groups=1, seq_len=4, n_head=3, d_model=32)
    with pytest.raises(ValueError, match="unknown prior preset"):
        prior_config("huge", codebook_size=4, num_groups=1, seq_len=4)
    assert prior_config("small", codebook_size=4, num_groups=1, seq_len=4).d_model == 128


def test_channel_first_grids_are_read_in_raster_order_and_written_back():
    layout = TokenLayout(codebook_size=9, num_groups=2, grid=(2, 3), layout="channel_first", image_size=(8, 12),
                         model_fingerprint="f")
    grids = np.arange(2 * 2 * 6).reshape(2, 2, 2, 3) % 9  # (N, G, h, w)
    seq = layout.to_sequences(grids)  # (N, L, G)
    assert seq.shape == (2, 6, 2)
    assert seq[1, 4, 1] == grids[1, 1, 1, 1]  # position 4 = row 1, column 1
    assert torch.equal(layout.from_sequences(seq), torch.as_tensor(grids))
    assert layout.seq_len == 6 and layout.bits_per_token == pytest.approx(2 * np.log2(9))
