"""The rFID Inception TorchScript file runs code: an unknown file is refused before torch.jit.load sees it."""

import hashlib

import pytest
import torch

from gaussquant.eval import fid


def test_the_pinned_digest_is_the_published_release():
    assert fid.INCEPTION_SHA256 == "f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4"


def test_an_unknown_inception_file_is_never_loaded(tmp_path, monkeypatch):
    path = tmp_path / fid.INCEPTION_FILE
    path.write_bytes(b"any TorchScript archive that is not the release")
    loads = []
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: loads.append(a) or torch.nn.Identity())
    monkeypatch.delenv(fid.INCEPTION_SHA256_ENV, raising=False)
    with pytest.raises(ValueError, match="not the known Inception release .*was not loaded"):
        fid.InceptionFeatures(weights_dir=tmp_path)
    assert loads == []
    # a digest the user names (here through the environment) is accepted
    monkeypatch.setenv(fid.INCEPTION_SHA256_ENV, hashlib.sha256(path.read_bytes()).hexdigest())
    fid.InceptionFeatures(weights_dir=tmp_path)
    assert len(loads) == 1
