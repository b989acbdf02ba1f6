"""Optional packages: a missing one ends with one sentence naming the extra that installs it."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from gaussquant.optional import MissingOptionalDependency, import_optional

ROOT = Path(__file__).resolve().parents[1]


def test_import_optional_returns_the_module():
    assert import_optional("json", package="json", extra="eval", needed_for="x") is importlib.import_module("json")


def test_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pytorch_msssim", None)  # import now raises ModuleNotFoundError
    with pytest.raises(MissingOptionalDependency,
                       match=r'^SSIM needs the optional package pytorch-msssim, which is not installed; '
                             r'install it with: pip install "gaussquant\[eval\]"$'):
        import_optional("pytorch_msssim", package="pytorch-msssim", extra="eval", needed_for="SSIM")


def test_a_broken_dependency_of_the_package_is_not_hidden(monkeypatch, tmp_path):
    (tmp_path / "gq_fake_pkg.py").write_text("import gq_fake_dependency_that_is_absent\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="gq_fake_dependency_that_is_absent") as info:
        import_optional("gq_fake_pkg", package="gq-fake-pkg", extra="eval", needed_for="x")
    assert not isinstance(info.value, MissingOptionalDependency)


def test_baseline_module_without_vector_quantize_pytorch(monkeypatch):
    monkeypatch.setitem(sys.modules, "vector_quantize_pytorch", None)
    monkeypatch.delitem(sys.modules, "gaussquant.quantizers.fsq", raising=False)
    with pytest.raises(MissingOptionalDependency, match=r"FSQ baseline.*gaussquant\[baselines\]"):
        importlib.import_module("gaussquant.quantizers.fsq")


def test_default_photos_without_their_wheels(monkeypatch):
    from gaussquant.data import default_photos

    monkeypatch.setattr(default_photos.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingOptionalDependency, match=r"scikit-image wheel.*gaussquant\[demo\].*--data DIR"):
        default_photos._package_dir("skimage")


def test_extras_cover_what_the_dev_install_needs():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(meta["dependencies"])
    extras = meta["optional-dependencies"]
    for optional in ("vector-quantize-pytorch", "pytorch-msssim", "matplotlib", "scikit-image", "scikit-learn"):
        assert optional not in core  # `pip install gaussquant` stays lean
    assert {"eval", "demo", "baselines", "all", "dev"} <= set(extras)
    assert "gaussquant[all]" in extras["dev"]  # `make test` (pip install -e ".[dev]") installs every extra
    listed = set(extras["all"][0].split("[")[1].rstrip("]").split(","))
    assert listed == set(extras) - {"all", "dev"}, "add a new extra to `all` as well"
