"""The pieces of `gaussquant bench generation`: the unigram baseline, token writing, the sample grid, the table."""

import numpy as np
import pytest
import torch
from PIL import Image

from gaussquant.bench.generation import format_table, save_samples, unigram_bits_per_token, write_tokens
from gaussquant.prior.data import TokenLayout
from gaussquant.tokens import load_tokens, model_fingerprint
from prior_fixtures import SIZE


def _layout(k: int, g: int) -> TokenLayout:
    return TokenLayout(codebook_size=k, num_groups=g, grid=(2, 2), layout="channel_first", image_size=(8, 8),
                       model_fingerprint="f")


def test_unigram_baseline_is_the_smoothed_frequency_code_length():
    train = np.zeros((10, 2, 2, 2), dtype=np.uint8)
    train[:, 1] = np.arange(4).reshape(2, 2)  # group 1 uniform over 4 of the 4 codewords
    test = train[:3]
    bits = unigram_bits_per_token(train, test, _layout(4, 2))
    # group 0: index 0 seen 40 times of 40, add-one smoothing -> 41/44; group 1: each 11/44 -> 2 bits
    assert bits == pytest.approx(-np.log2(41 / 44) + 2.0)


def test_write_tokens_and_sample_grid_use_the_model(tmp_path):
    from gaussquant.models.presets import ModelConfig, build_autoencoder
    from gaussquant.quantizers.build import VQConfig, build_bottleneck

    torch.manual_seed(0)  # weights of the tiny model; tests only
    model = build_autoencoder(ModelConfig(arch="unet-tiny", image_size=SIZE),
                              build_bottleneck(VQConfig(latent_channels=8, codebook_size=16, codebook_dim=4))).eval()
    images = [torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(i)) * 2 - 1 for i in range(5)]
    path = write_tokens(model, images, tmp_path / "t.npz", batch_size=2)
    tokens = load_tokens(path)
    assert tokens.num_images == 5 and tokens.model_fingerprint == model_fingerprint(model)
    with torch.no_grad():
        assert np.array_equal(tokens.indices, model.tokenize(torch.stack(images)).numpy())
    grid = save_samples(model, torch.as_tensor(tokens.indices.astype(np.int64)), tmp_path / "g.png")
    assert np.asarray(Image.open(grid)).shape == (2 * (SIZE + 2), 4 * (SIZE + 2), 3)


def test_table_has_one_row_per_method():
    row = dict(method="gq", codebook_size=256, num_groups=1, rate=8.0, test_bits_per_token=6.5,
               fraction_of_rate=0.8125, unigram_bits_per_token=7.0, train_bits_per_token=6.0)
    table = format_table([row, {**row, "method": "vq"}])
    assert table.count("\n") == 3 and "| gq | 256 x 1 | 8.00 | 6.500 | 0.812 | 7.000 | 6.000 |" in table
