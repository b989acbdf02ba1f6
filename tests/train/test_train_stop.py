"""Stopping a training run: Ctrl-C / SIGTERM (one line, checkpoint, exit 130 / 143), the wall-clock budget,
the data sentence and config.yaml's planned steps (issue 17, rough edges)."""

import logging
import os
import signal

import numpy as np
import pytest
import yaml
from PIL import Image

from gaussquant.cli import main as cli_main
from gaussquant.data.folder import ImageFolderDataset
from gaussquant.data.summary import describe_training_data
from gaussquant.train.checkpoint import latest_checkpoint
from gaussquant.train.interrupt import TrainingInterrupted
from gaussquant.train.trainer import Trainer


@pytest.fixture
def default_sigint():
    """Python's own SIGINT handler for the test, whatever the shell left (a background job inherits SIG_IGN)."""
    found = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, found)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_the_unsaved_steps_and_resumes(tiny_config, tmp_path, signum, default_sigint):
    cfg = tiny_config(steps=50, ckpt_every=100)

    def interrupt(trainer, logs):
        if trainer.step == 3:
            os.kill(os.getpid(), signum)

    trainer = Trainer(cfg)
    with pytest.raises(TrainingInterrupted) as stop:
        trainer.fit(on_step=interrupt)
    assert stop.value.step == 3 and stop.value.exit_code == 128 + signum
    assert str(stop.value) == "interrupted at step 3; rerun the same command to resume"
    assert latest_checkpoint(trainer.out / "checkpoints").name.endswith("3")
    # the handlers are restored: the default SIGINT handler raises KeyboardInterrupt again
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    again = Trainer(tiny_config(steps=5, ckpt_every=100))
    assert again.step == 3
    assert again.fit().step == 5


def test_cli_prints_one_line_and_exits_with_the_signal_status(tmp_path, monkeypatch, capsys):
    import gaussquant.train.trainer as trainer_module

    def stopped(config, resume=False):
        raise TrainingInterrupted(7, signal.SIGTERM)

    monkeypatch.setattr(trainer_module, "run", stopped)
    code = cli_main(["train", "--preset", "unet-tiny-gq", "--out", str(tmp_path / "r")])
    assert code == 143
    assert capsys.readouterr().err.strip() == "interrupted at step 7; rerun the same command to resume"


def test_wall_clock_budget_stops_whatever_the_step_count(tiny_config):
    cfg = tiny_config(steps=100_000, max_seconds=0.5, ckpt_every=100_000)
    result = Trainer(cfg).fit()
    assert 1 <= result.step < 100_000 and result.checkpoint is not None
    assert result.checkpoint.name.endswith(str(result.step))


def test_config_yaml_records_the_planned_steps(tiny_config):
    cfg = tiny_config(steps=3)
    result = Trainer(cfg).fit()
    saved = yaml.safe_load((result.out / "config.yaml").read_text())
    assert saved["steps"] == 3 == result.step


def test_train_says_what_data_it_found(tmp_path, tiny_config, caplog):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / "rgb.png")
    Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(folder / "grey.png")
    Image.fromarray(rng.integers(0, 255, (40, 40, 4), dtype=np.uint8), "RGBA").save(folder / "rgba.png")
    Image.fromarray(rng.integers(0, 255, (8, 12, 3), dtype=np.uint8)).convert("P").save(folder / "small.png")
    dataset = ImageFolderDataset(folder, image_size=16)
    text = describe_training_data(dataset)
    assert text.startswith("found 4 images under")
    assert "3 converted to RGB" in text and "1 upscaled to 16 px" in text
    with caplog.at_level(logging.INFO, logger="gaussquant.train.trainer"):
        Trainer(tiny_config(steps=1))
    assert any("bundled training photos" in r.getMessage() and "found 8" in r.getMessage() for r in caplog.records)
