"""The commands end to end: encode -> prior train -> generate -> prior eval, with the tokenizer checked."""

import hashlib

import numpy as np
import pytest
from PIL import Image

from gaussquant.cli import main
from gaussquant.prior.store import load_prior
from gaussquant.tokens import load_tokens
from prior_fixtures import SIZE, save_tiny_vq, write_images


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    tokenizer = save_tiny_vq(root / "vq", seed=0)
    images = write_images(root / "images", 6)
    tokens = root / "tokens.npz"
    assert main(["encode", str(tokenizer), str(images), "--out", str(tokens), "--device", "cpu"]) == 0
    return root, tokenizer, tokens


def _digests(folder) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.png"))]


def test_train_generate_eval_through_the_cli(encoded, tmp_path, capsys):
    root, tokenizer, tokens = encoded
    run = tmp_path / "prior"
    argv = ["prior", "train", str(tokens), "--out", str(run), "--steps", "6", "--batch-size", "4",
            "--tokenizer", str(tokenizer), "--class-from-folders", "--device", "cpu"]
    assert main(argv) == 0
    prior = load_prior(run)
    assert prior.tokenizer == str(tokenizer.resolve()) and prior.class_names == ["shirt", "shoe"]
    assert prior.layout.model_fingerprint == load_tokens(tokens).model_fingerprint
    out = tmp_path / "gen"
    assert main(["generate", str(run), "--num", "3", "--out", str(out), "--seed", "7", "--top-k", "8",
                 "--device", "cpu"]) == 0
    pngs = sorted(out.rglob("*.png"))
    assert [p.relative_to(out).as_posix() for p in pngs] == [
        "shirt/sample_00000.png", "shirt/sample_00002.png", "shoe/sample_00001.png"]
    assert np.asarray(Image.open(pngs[0])).shape == (SIZE, SIZE, 3)
    sampled = load_tokens(out / "tokens.npz")  # the sampled tokens, in the encode format
    assert sampled.model_fingerprint == prior.layout.model_fingerprint and sampled.indices.shape == (3, 2, 4, 4)
    # the same seed gives the same images; another seed other images
    assert main(["generate", str(run), "--num", "3", "--out", str(tmp_path / "again"), "--seed", "7",
                 "--top-k", "8", "--device", "cpu"]) == 0
    assert _digests(out) == _digests(tmp_path / "again")
    assert main(["generate", str(run), "--num", "3", "--out", str(tmp_path / "other"), "--seed", "8",
                 "--device", "cpu"]) == 0
    assert _digests(out) != _digests(tmp_path / "other")
    capsys.readouterr()
    assert main(["prior", "eval", str(run), str(tokens), "--device", "cpu", "--json", str(tmp_path / "m.json")]) == 0
    printed = capsys.readouterr().out
    assert "bits per token" in printed and "bits per pixel" in printed and "rate 8.00 bits per token" in printed
    assert (tmp_path / "m.json").is_file()


def test_generate_refuses_a_tokenizer_that_did_not_write_the_tokens(encoded, tmp_path, capsys):
    root, tokenizer, tokens = encoded
    other = save_tiny_vq(tmp_path / "other_vq", seed=1)  # same architecture and K, other weights and codebook
    run = tmp_path / "prior"
    assert main(["prior", "train", str(tokens), "--out", str(run), "--steps", "2", "--device", "cpu"]) == 0
    capsys.readouterr()
    # trained without --tokenizer: generate must be told which model decodes
    assert main(["generate", str(run), "--num", "2", "--out", str(tmp_path / "g"), "--device", "cpu"]) == 1
    assert "pass --tokenizer" in capsys.readouterr().err
    assert main(["generate", str(run), "--num", "2", "--out", str(tmp_path / "g"), "--tokenizer", str(other),
                 "--device", "cpu"]) == 1
    assert "not the model that wrote this prior's training tokens" in capsys.readouterr().err
    assert not (tmp_path / "g").exists()  # refused before anything was written
    assert main(["generate", str(run), "--num", "2", "--out", str(tmp_path / "g"), "--tokenizer", str(tokenizer),
                 "--device", "cpu"]) == 0
    assert len(list((tmp_path / "g").glob("*.png"))) == 2
    # prior train checks a given tokenizer too
    assert main(["prior", "train", str(tokens), "--out", str(tmp_path / "p2"), "--steps", "1",
                 "--tokenizer", str(other), "--device", "cpu"]) == 1
    assert "did not write these tokens" in capsys.readouterr().err
    assert main(["generate", str(run), "--num", "2", "--out", str(tmp_path / "g2"), "--top-k", "0"]) == 1
    assert "--top-k >= 1" in capsys.readouterr().err and not (tmp_path / "g2").exists()
    assert main(["prior", "eval", str(tmp_path / "missing"), str(tokens)]) == 1
    assert "prior not found" in capsys.readouterr().err
