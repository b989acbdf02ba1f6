"""Training a prior: a tiny one memorises a tiny token set, resumes to the same weights, refuses other tokens."""

import numpy as np
import pytest
import torch

from gaussquant.prior.evaluate import evaluate_prior
from gaussquant.prior.generate import sample_tokens
from gaussquant.prior.store import load_prior
from gaussquant.prior.train import train_prior
from prior_fixtures import random_grids, write_tokens

K, G, GRID = 16, 3, (2, 3)


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def tiny_tokens(tmp_path_factory):
    grids = random_grids(4, groups=G, grid=GRID, codebook_size=K, seed=0)
    return write_tokens(tmp_path_factory.mktemp("tok") / "train.npz", grids, codebook_size=K), grids


def test_a_tiny_prior_memorises_a_tiny_token_set(tiny_tokens, tmp_path):
    path, grids = tiny_tokens
    train_prior(path, tmp_path / "run", steps=100, batch_size=8, lr=1e-2, checkpoint_every=1000)
    prior = load_prior(tmp_path / "run")
    assert prior.step == 100 and prior.layout.grid == GRID
    result = evaluate_prior(prior, path)
    rate = G * np.log2(K)  # 12 bits per token
    assert result["rate_bits_per_token"] == pytest.approx(rate) and result["num_images"] == 4
    # memorised: close to log2(4) = 2 bits per image (which of the 4), 0.33 bits per token; the rate is 12
    assert result["bits_per_token"] < 0.05 * rate, result
    assert result["fraction_of_rate"] == pytest.approx(result["bits_per_token"] / rate)
    assert result["bits_per_pixel"] == pytest.approx(result["bits_per_token"] * 6 / 16**2)
    # what it samples is what it learned: every sample is one of the training grids
    samples, names = sample_tokens(prior, 8, seed=0)
    assert samples.shape == (8, G, *GRID) and names[0] == "sample_00000.png"
    train = {g.tobytes() for g in grids.astype(np.int64)}
    assert all(s.numpy().tobytes() in train for s in samples)
    # unseen random grids are not: their NLL stays at or above the rate
    held_out = write_tokens(tmp_path / "held.npz", random_grids(4, groups=G, grid=GRID, codebook_size=K, seed=9),
                            codebook_size=K)
    assert evaluate_prior(prior, held_out)["bits_per_token"] > rate


def test_max_seconds_stops_early_with_a_checkpoint(tiny_tokens, tmp_path):
    path, _ = tiny_tokens
    last = train_prior(path, tmp_path / "timed", steps=10**6, batch_size=4, checkpoint_every=10**6, max_seconds=0.2)
    step = load_prior(last).step
    assert 1 <= step < 10**6 and load_prior(tmp_path / "timed").step == step
    with pytest.raises(ValueError, match="max_seconds must be > 0"):
        train_prior(path, tmp_path / "bad", steps=5, max_seconds=0)


def test_resume_after_an_interruption_reaches_the_same_weights(tiny_tokens, tmp_path):
    path, _ = tiny_tokens
    kw = dict(steps=8, batch_size=4, checkpoint_every=3)
    train_prior(path, tmp_path / "straight", **kw)

    def stop_at_7(step, loss):
        if step == 7:
            raise Interrupt  # killed between checkpoints: steps 7 is lost, step 6 is on disk

    with pytest.raises(Interrupt):
        train_prior(path, tmp_path / "resumed", on_step=stop_at_7, **kw)
    assert load_prior(tmp_path / "resumed").step == 6
    train_prior(path, tmp_path / "resumed", **kw)
    a, b = load_prior(tmp_path / "straight").model, load_prior(tmp_path / "resumed").model
    assert load_prior(tmp_path / "resumed").step == 8
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name


def test_resume_refuses_other_tokens_or_settings(tiny_tokens, tmp_path):
    path, _ = tiny_tokens
    train_prior(path, tmp_path / "run", steps=2, batch_size=2)
    other = write_tokens(tmp_path / "other.npz", random_grids(3, groups=G, grid=GRID, codebook_size=K, seed=1),
                         codebook_size=K, fingerprint="e" * 64)
    with pytest.raises(ValueError, match="different tokenizer"):
        train_prior(other, tmp_path / "run", steps=4, batch_size=2)
    with pytest.raises(ValueError, match="other settings"):
        train_prior(path, tmp_path / "run", steps=4, batch_size=2, preset="small")
    with pytest.raises(ValueError, match="different tokenizer"):
        evaluate_prior(load_prior(tmp_path / "run"), other)
    with pytest.raises(ValueError, match="steps"):
        train_prior(path, tmp_path / "run2", steps=0)


def test_class_conditional_prior_learns_which_grid_each_class_has(tmp_path):
    grids = random_grids(2, groups=G, grid=GRID, codebook_size=K, seed=4)
    path = write_tokens(tmp_path / "cls.npz", grids, codebook_size=K, names=["cat/a.png", "dog/b.png"])
    train_prior(path, tmp_path / "run", steps=60, batch_size=4, lr=1e-2, class_from_folders=True)
    prior = load_prior(tmp_path / "run")
    assert prior.class_names == ["cat", "dog"]
    assert evaluate_prior(prior, path)["bits_per_token"] < 0.02 * G * np.log2(K)  # the class says it all
    dogs, names = sample_tokens(prior, 3, seed=0, class_name="dog")
    assert all(name.startswith("dog/") for name in names)
    assert all(torch.equal(d, torch.as_tensor(grids[1].astype(np.int64))) for d in dogs)
    with pytest.raises(ValueError, match="unknown class"):
        sample_tokens(prior, 1, class_name="bird")
    flat = write_tokens(tmp_path / "flat.npz", grids, codebook_size=K)
    with pytest.raises(ValueError, match="class sub-folder"):
        train_prior(flat, tmp_path / "run3", steps=1, class_from_folders=True)
