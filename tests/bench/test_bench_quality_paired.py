"""Paired GQ-minus-baseline intervals and verdicts of ``bench quality``; its evaluation split."""

import math

import pytest
from scipy import stats

from gaussquant.bench.paired import paired_interval, paired_rows, t_quantile, t_two_sided_cdf
from gaussquant.bench.quality import QUICK, QualityConfig, plan, split_datasets, train_config
from gaussquant.bench.quality_report import format_paired


@pytest.mark.parametrize("df", [1, 2, 3, 4, 7, 10, 29])
def test_t_quantile_matches_scipy(df):
    assert t_quantile(0.95, df) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-9)
    assert t_two_sided_cdf(1.3, df) == pytest.approx(1 - 2 * stats.t.sf(1.3, df), rel=1e-9)


def test_paired_interval_by_hand():
    # differences 1, 1.5, 2: mean 1.5, std 0.5, half-width t(0.975, 2) * 0.5 / sqrt(3) = 1.242 -> [0.258, 2.742]
    r = paired_interval([1.0, 1.5, 2.0])
    assert r["mean"] == 1.5 and r["std"] == 0.5
    assert r["half_width"] == pytest.approx(4.302652729749464 * 0.5 / math.sqrt(3))
    assert r["verdict"] == "GQ ahead" and r["low"] == pytest.approx(0.2579, abs=1e-4)
    assert paired_interval([-1.0, -1.5, -2.0])["verdict"] == "behind"
    assert paired_interval([1.0, 2.0, 3.0])["verdict"] == "within noise"  # mean 2 but half-width 2.48
    assert paired_interval([-1.0, 1.0, 0.5])["verdict"] == "within noise"
    one = paired_interval([5.0])
    assert one["verdict"] == "within noise" and one["low"] is None


def test_paired_rows_pair_by_seed_and_flip_lower_is_better():
    rows = [{"arch": "vit", "rate": 8, "method": m, "seed": s, "psnr": p, "fd": f}
            for m, s, p, f in [("gq", 0, 20.0, 10.0), ("gq", 1, 21.0, 12.0), ("gq", 2, 19.0, 9.0),
                               ("vq", 0, 19.0, 11.0), ("vq", 1, 20.5, 13.0), ("vq", 2, 18.0, 9.5),
                               ("fsq", 0, 30.0, 1.0)]]
    psnr = paired_rows(rows)
    vq = next(p for p in psnr if p["baseline"] == "vq")
    assert vq["seeds"] == [0, 1, 2] and vq["differences"] == [1.0, 0.5, 1.0] and vq["verdict"] == "GQ ahead"
    fsq = next(p for p in psnr if p["baseline"] == "fsq")
    assert fsq["n"] == 1 and fsq["verdict"] == "within noise"  # only seed 0 is paired
    fd = paired_rows(rows, "fd", higher_is_better=False)
    assert next(p for p in fd if p["baseline"] == "vq")["differences"] == [1.0, 1.0, 0.5]
    table = format_paired(psnr)
    assert "GQ ahead" in table and "n/a (1 seed)" in table


def test_folder_must_hold_train_and_val(tmp_path):
    with pytest.raises(ValueError, match="train/ and val/"):
        QualityConfig(data=str(tmp_path))
    with pytest.raises(ValueError, match="dataset"):
        QualityConfig(dataset="cifar")


def test_evaluation_uses_val_only(tmp_path):
    from PIL import Image

    for split, n in (("train", 3), ("val", 2)):
        (tmp_path / split).mkdir()
        for i in range(n):
            Image.new("RGB", (40, 40), (i * 40, 0, 0)).save(tmp_path / split / f"{i}.png")
    cfg = QualityConfig(archs=("unet",), rates=(8,), seeds=(0,), methods=("gq",), data=str(tmp_path))
    train, held_out, description = split_datasets(cfg, train_config(cfg, plan(cfg)[0], tmp_path / "run"))
    assert len(train) == 3 and len(held_out) == 2 and "val" in description
    assert held_out.root == tmp_path / "val" and train.root == tmp_path / "train"


def test_fashion_mnist_missing_files_are_a_clear_error(tmp_path):
    cfg = QualityConfig(archs=("unet",), rates=(8,), seeds=(0,), methods=("gq",), dataset="fashion-mnist",
                        data=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        split_datasets(cfg, train_config(cfg, plan(cfg)[0], tmp_path / "run"))


def test_quick_grid_is_small_and_paired():
    cfg = QualityConfig(**QUICK)
    assert len(cfg.seeds) >= 2 and cfg.steps <= 10 and len(plan(cfg)) == 4  # 2 seeds x (tdc-8, fsq-8)
    default = QualityConfig()
    assert default.rates == (8,) and len(default.seeds) == 9 and not default.fd
    assert len(QualityConfig(dataset="fashion-mnist").seeds) == 5
