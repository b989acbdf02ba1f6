"""Tokens on disk: format, dtype by K, encode -> decode equals the eval-mode reconstruction, every error."""

import numpy as np
import pytest
import torch
from PIL import Image

from gaussquant.data.transforms import to_uint8
from gaussquant.decode import decode_tokens
from gaussquant.encode import encode_folder
from gaussquant.models.presets import ModelConfig, build_autoencoder
from gaussquant.quantizers.build import VQConfig, build_bottleneck
from gaussquant.tokens import TokenWriter, index_dtype, load_tokens, model_fingerprint

SIZE = 16


def tiny_vq(seed: int, codebook_size: int = 300):
    torch.manual_seed(seed)  # weights of the tiny model; tests only
    cfg = VQConfig(latent_channels=8, codebook_size=codebook_size, codebook_dim=4, seed=seed)
    return build_autoencoder(ModelConfig(arch="unet-tiny", image_size=SIZE), build_bottleneck(cfg)).eval()


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    (root / "sub").mkdir()
    for i in range(5):  # 5 images, batch size 2: a ragged last batch
        name = f"sub/img{i}.png" if i % 2 else f"img{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (SIZE + 4, SIZE, 3), dtype=np.uint8)).save(root / name)
    return root


@pytest.mark.parametrize("k, dtype", [(2, np.uint8), (256, np.uint8), (257, np.uint16), (65536, np.uint16),
                                      (65537, np.uint32), (3000000, np.uint32)])
def test_index_dtype_by_codebook_size(k, dtype):
    assert index_dtype(k) == dtype


def test_writer_round_trip_token_last_and_errors(tmp_path):
    idx = torch.randint(0, 5, (3, 7, 2))
    path = tmp_path / "t.npz"
    with TokenWriter(path, num_images=3, codebook_size=5, image_size=(8, 8), model_fingerprint="f") as w:
        w.write(idx[:1], ["a"])
        w.write(idx[1:], ["b", "c"])
        w.close()
    tokens = load_tokens(path)
    assert tokens.layout == "token_last" and tokens.grid == (7,) and tokens.num_groups == 2
    assert tokens.indices.dtype == np.uint8 and torch.equal(tokens.batch(0, 3), idx)
    # fewer images than announced: an error and no file left behind
    w = TokenWriter(tmp_path / "short.npz", num_images=3, codebook_size=5, image_size=(8, 8), model_fingerprint="f")
    w.write(idx[:1], ["a"])
    with pytest.raises(RuntimeError, match="incomplete"):
        w.close()
    assert not list(tmp_path.glob("short*"))
    w = TokenWriter(tmp_path / "bad.npz", num_images=3, codebook_size=5, image_size=(8, 8), model_fingerprint="f")
    with pytest.raises(ValueError, match="out of range"):
        w.write(idx + 5, ["a", "b", "c"])
    w.abort()
    with pytest.raises(FileNotFoundError):
        load_tokens(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a gaussquant tokens"):
        load_tokens(tmp_path / "junk.npz")


def test_encode_decode_equals_eval_reconstruction(image_dir, tmp_path):
    from gaussquant.data.folder import ImageFolderDataset

    model = tiny_vq(0)
    path = encode_folder(model, image_dir, tmp_path / "tokens.npz", image_size=SIZE, batch_size=2)
    tokens = load_tokens(path)
    assert tokens.indices.shape == (5, 2, SIZE // 4, SIZE // 4) and tokens.indices.dtype == np.uint16
    assert tokens.codebook_size == 300 and tokens.image_size == (SIZE, SIZE)
    assert tokens.model_fingerprint == model_fingerprint(model)
    dataset = ImageFolderDataset(image_dir, image_size=SIZE, mode="center")
    assert tokens.file_names == dataset.files
    x = torch.stack([dataset[i] for i in range(5)])
    with torch.no_grad():
        out = model(x)
        expected = to_uint8(out.x_hat).permute(0, 2, 3, 1).numpy()
    assert torch.equal(tokens.batch(0, 5), out.bottleneck.indices)
    written = decode_tokens(model, path, tmp_path / "decoded", batch_size=3)
    assert [p.relative_to(tmp_path / "decoded").as_posix() for p in written] == [
        n.rsplit(".", 1)[0] + ".png" for n in dataset.files
    ]
    for i, p in enumerate(written):
        assert np.array_equal(np.asarray(Image.open(p)), expected[i]), p


def test_decode_refuses_other_model_and_bad_indices(image_dir, tmp_path):
    model = tiny_vq(0)
    path = encode_folder(model, image_dir, tmp_path / "tokens.npz", image_size=SIZE, batch_size=4)
    with pytest.raises(ValueError, match="different model"):
        decode_tokens(tiny_vq(1), path, tmp_path / "out")
    with pytest.raises(ValueError, match="K=300.*K=64"):
        decode_tokens(tiny_vq(0, codebook_size=64), path, tmp_path / "out")
    # hand-edited indices beyond K
    data = dict(np.load(path))
    data["indices"] = data["indices"].copy()
    data["indices"][0, 0, 0, 0] = 300
    np.savez(tmp_path / "edited.npz", **data)
    with pytest.raises(ValueError, match="out of range"):
        decode_tokens(model, tmp_path / "edited.npz", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_encode_needs_a_discrete_model(image_dir, tmp_path):
    model = tiny_vq(0)
    model.bottleneck.is_discrete = False  # stand-in for a continuous bottleneck
    with pytest.raises(TypeError, match="discrete"):
        encode_folder(model, image_dir, tmp_path / "t.npz", image_size=SIZE)


def test_cli_encode_decode_and_error_message(image_dir, tmp_path, capsys):
    from gaussquant.cli import main

    tiny_vq(0).save_pretrained(tmp_path / "m0")
    tiny_vq(1).save_pretrained(tmp_path / "m1")
    tokens = tmp_path / "t.npz"
    assert main(["encode", str(tmp_path / "m0"), str(image_dir), "--out", str(tokens), "--device", "cpu"]) == 0
    assert main(["decode", str(tmp_path / "m0"), str(tokens), "--out", str(tmp_path / "png"), "--device", "cpu"]) == 0
    assert len(list((tmp_path / "png").rglob("*.png"))) == 5
    capsys.readouterr()
    assert main(["decode", str(tmp_path / "m1"), str(tokens), "--out", str(tmp_path / "x"), "--device", "cpu"]) == 1
    assert "different model" in capsys.readouterr().err


def test_fsq_fingerprint_covers_levels_order_and_index_order():
    """Token indices of FSQ depend on the order of the levels and on index_order, which no weight records:
    a token file written by one must not decode with the other."""
    from gaussquant.quantizers.fsq import FiniteScalarQuantizer

    base = FiniteScalarQuantizer([8, 6, 5], num_groups=2)
    same = FiniteScalarQuantizer([8, 6, 5], num_groups=2)
    others = [FiniteScalarQuantizer([5, 6, 8], num_groups=2),
              FiniteScalarQuantizer([8, 6, 5], num_groups=2, index_order="first_most_significant")]
    assert model_fingerprint(base) == model_fingerprint(same)
    for other in others:
        assert other.codebook_size == base.codebook_size
        assert model_fingerprint(other) != model_fingerprint(base)
