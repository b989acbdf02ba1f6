"""A corpus of bad inputs and faults (issue 16, item 7): each ends in one sentence, with no traceback, and
nothing written or lost.

Every case builds its bad input in a fresh folder, runs the CLI in-process (``gaussquant.cli.main``), and
asserts the outcome class: exit code 1, exactly one ``gaussquant CMD: error: ...`` line on stderr matching
the expected cause, no ``Traceback``, and every file that existed before the command unchanged, with no new
file except those the case allows.
"""

from __future__ import annotations

import json

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gaussquant.cli import main
from gaussquant.models.presets import ModelConfig, build_autoencoder
from gaussquant.pretrained import save_pretrained
from gaussquant.quantizers.build import GaussianConfig, VQConfig, build_bottleneck
from gaussquant.tokens import TokenWriter, model_fingerprint

SIZE = 16
TINY_TRAIN = {
    "model.image_size": 16, "data.image_size": 16, "data.num_crops": 32, "data.eval_crops": 4, "batch_size": 2,
    "steps": 2, "log_every": 1, "image_every": 100, "ckpt_every": 2, "optim.warmup_steps": 0,
}


def _vq_model(seed=0):
    torch.manual_seed(seed)
    cfg = VQConfig(latent_channels=8, codebook_size=300, codebook_dim=4, seed=seed)
    mcfg = ModelConfig(arch="unet-tiny", image_size=SIZE)
    return build_autoencoder(mcfg, build_bottleneck(cfg)).eval(), mcfg, cfg


def _save_vq(folder: Path, seed=0) -> Path:
    model, mcfg, cfg = _vq_model(seed)
    return save_pretrained(model, folder, model_config=mcfg, bottleneck_config=cfg)


def _images(folder: Path, n=3) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    return folder


def _train_argv(out: Path, **extra) -> list[str]:
    argv = ["train", "--preset", "unet-tiny-gq", "--out", str(out)]
    for key, value in {**TINY_TRAIN, **extra}.items():
        argv += ["--set", f"{key}={value}"]
    return argv


# ------------------------------------------------------------------------------------------- the cases
# Each builder gets a fresh folder and returns (argv, pattern the error must match, new paths allowed).


def corrupt_image(tmp):
    _save_vq(tmp / "m")
    images = _images(tmp / "img")
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return ["encode", str(tmp / "m"), str(images), "--out", str(tmp / "t.npz")], r"broken\.png", []


def pickled_npz(tmp):
    _save_vq(tmp / "m")
    np.savez(tmp / "t.npz", indices=np.array([{"a": 1}], dtype=object))
    return ["decode", str(tmp / "m"), str(tmp / "t.npz"), "--out", str(tmp / "png")], r"t\.npz", []


def foreign_weights(tmp):
    model, _, cfg = _vq_model()
    save_pretrained(model, tmp / "m")
    meta = json.loads((tmp / "m" / "config.json").read_text())
    meta["model"]["arch"] = "vit-tiny"  # UNet weights under a ViT config
    (tmp / "m" / "config.json").write_text(json.dumps(meta))
    images = _images(tmp / "img")
    return ["encode", str(tmp / "m"), str(images), "--out", str(tmp / "t.npz")], "another architecture", []


def empty_tokens_file(tmp):
    _save_vq(tmp / "m")
    (tmp / "t.npz").write_bytes(b"")
    return ["decode", str(tmp / "m"), str(tmp / "t.npz"), "--out", str(tmp / "png")], r"t\.npz is empty", []


def truncated_tokens_file(tmp):
    _save_vq(tmp / "m")
    (tmp / "t.npz").write_bytes(b"PK\x03\x04\x14\x00")
    return ["decode", str(tmp / "m"), str(tmp / "t.npz"), "--out", str(tmp / "png")], "truncated", []


def partial_tokens_file(tmp):
    _save_vq(tmp / "m")
    (tmp / "t.npz.partial").write_bytes(b"PK\x03\x04 half a file")
    return (["decode", str(tmp / "m"), str(tmp / "t.npz.partial"), "--out", str(tmp / "png")],
            "unfinished tokens file left by an interrupted encode", [])


def token_last_file_for_a_channel_first_model(tmp):
    model, _, _ = _vq_model()
    _save_vq(tmp / "m")
    with TokenWriter(tmp / "t.npz", num_images=2, codebook_size=300, image_size=(SIZE, SIZE),
                     model_fingerprint=model_fingerprint(model)) as writer:
        writer.write(torch.zeros(2, 16, 2, dtype=torch.long), ["a.png", "b.png"])  # (N, L, G), G = 2
        writer.close()
    return (["decode", str(tmp / "m"), str(tmp / "t.npz"), "--out", str(tmp / "png")],
            "token_last tokens .* this model makes channel_first tokens", [])


def decode_out_under_a_file(tmp):
    model, _, _ = _vq_model()
    _save_vq(tmp / "m")
    with TokenWriter(tmp / "t.npz", num_images=1, codebook_size=300, image_size=(SIZE, SIZE),
                     model_fingerprint=model_fingerprint(model)) as writer:
        writer.write(torch.zeros(1, 2, 4, 4, dtype=torch.long), ["a.png"])
        writer.close()
    (tmp / "file").write_text("x")
    return (["decode", str(tmp / "m"), str(tmp / "t.npz"), "--out", str(tmp / "file" / "png")],
            "is a file, not a folder", [])


def encode_out_under_a_file(tmp):
    _save_vq(tmp / "m")
    images = _images(tmp / "img")
    (tmp / "file").write_text("x")
    return (["encode", str(tmp / "m"), str(images), "--out", str(tmp / "file" / "sub" / "t.npz")],
            "is a file, not a folder", [])


def encode_image_size_zero(tmp):
    _save_vq(tmp / "m")
    images = _images(tmp / "img")
    return (["encode", str(tmp / "m"), str(images), "--out", str(tmp / "t.npz"), "--image-size", "0"],
            "--image-size must be a positive", [])


def decode_with_nan_weights(tmp):
    model, mcfg, cfg = _vq_model()
    images = _images(tmp / "img")
    save_pretrained(model, tmp / "m", model_config=mcfg, bottleneck_config=cfg)
    assert main(["encode", str(tmp / "m"), str(images), "--out", str(tmp / "t.npz"), "--device", "cpu"]) == 0
    with torch.no_grad():
        model.decoder.last_layer_weight.fill_(float("nan"))
    save_pretrained(model, tmp / "m", model_config=mcfg, bottleneck_config=cfg)
    return (["decode", str(tmp / "m"), str(tmp / "t.npz"), "--out", str(tmp / "png")],
            "weights hold NaN or infinite values", [])


def convert_huge_codebook(tmp):
    torch.manual_seed(0)
    cfg = GaussianConfig(latent_channels=4, codebook_dim=4, target_bits=8.0)
    mcfg = ModelConfig(arch="unet-tiny", image_size=SIZE)
    save_pretrained(build_autoencoder(mcfg, build_bottleneck(cfg)), tmp / "m", model_config=mcfg, bottleneck_config=cfg)
    return (["convert", str(tmp / "m"), "--codebook-size", str(2**50), "--out", str(tmp / "gq")],
            "needs about .* GiB of memory to build", [])


def train_out_under_a_file(tmp):
    (tmp / "file").write_text("x")
    return _train_argv(tmp / "file" / "run"), "is a file, not a folder", []


class _Payload:
    """A pickled class instance: safe (weights_only) loading refuses it."""


def train_unsafe_training_state(tmp):
    assert main(_train_argv(tmp / "run")) == 0
    state = next((tmp / "run" / "checkpoints").glob("step_*")) / "training_state.pt"
    torch.save({"step": _Payload()}, state)
    return _train_argv(tmp / "run", steps=4), r"training_state\.pt' is unsafe", []


def train_changed_batch_size_on_resume(tmp):
    assert main(_train_argv(tmp / "run")) == 0
    return _train_argv(tmp / "run", steps=4, batch_size=4), r"cannot resume .*batch_size: 2 -> 4", []


def train_into_a_locked_run_folder(tmp):
    from gaussquant.train.checkpoint import RunLock

    lock = RunLock(tmp / "run").acquire()
    train_into_a_locked_run_folder.lock = lock  # held while the command runs
    return _train_argv(tmp / "run"), "is in use by another training", []


def train_diverging(tmp):
    return _train_argv(tmp / "run", **{"optim.lr": 1e4, "steps": 4}), "diverged at step 2", ["run"]


CASES = [
    corrupt_image, pickled_npz, foreign_weights, empty_tokens_file, truncated_tokens_file, partial_tokens_file,
    token_last_file_for_a_channel_first_model, decode_out_under_a_file, encode_out_under_a_file,
    encode_image_size_zero, decode_with_nan_weights, convert_huge_codebook, train_out_under_a_file,
    train_unsafe_training_state, train_changed_batch_size_on_resume, train_into_a_locked_run_folder,
    train_diverging,
]


def _snapshot(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file (a run folder's .lock only records who holds it: skipped)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input_ends_in_one_sentence_and_writes_nothing(case, tmp_path, capsys):
    argv, pattern, allowed_new = case(tmp_path)
    before = _snapshot(tmp_path)
    capsys.readouterr()
    if argv[0] in ("encode", "decode", "convert"):
        argv = argv + ["--device", "cpu"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith(f"gaussquant {argv[0]}: error: ")]
    assert "Traceback" not in err and len(errors) == 1, err[-2000:]
    assert re.search(pattern, errors[0]), errors[0]
    after = _snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before, "a file that existed was changed or lost"
    new = [k for k in after if k not in before and not any(k.startswith(a) for a in allowed_new)]
    assert new == [], f"files written: {new}"


def test_a_killed_encode_leaves_no_partial_after_the_next_run(tmp_path):
    _save_vq(tmp_path / "m")
    images = _images(tmp_path / "img")
    (tmp_path / "t.npz.partial").write_bytes(b"PK\x03\x04 left by a SIGKILL")
    assert main(["encode", str(tmp_path / "m"), str(images), "--out", str(tmp_path / "t.npz"), "--device", "cpu"]) == 0
    assert (tmp_path / "t.npz").is_file() and not (tmp_path / "t.npz.partial").exists()
