"""Resuming with a changed config refuses what breaks the run and applies (and records) the rest."""

import logging

import pytest
import torch
import yaml

from gaussquant.train.resume_config import config_changes
from gaussquant.train.trainer import Trainer


@pytest.fixture
def trained(tiny_config):
    Trainer(tiny_config(steps=2, ckpt_every=2)).fit()
    return tiny_config


def test_changed_lr_and_steps_are_applied_printed_and_recorded(trained, caplog):
    caplog.set_level(logging.WARNING)
    trainer = Trainer(trained(steps=4, **{"optim.lr": 0.5}))
    assert trainer.step == 2
    assert [g["lr"] for g in trainer.c.optimizer.param_groups] == [0.5]  # not the checkpoint's 1e-3
    assert "optim.lr: 0.001 -> 0.5" in caplog.text and "steps: 2 -> 4" in caplog.text
    recorded = yaml.safe_load((trainer.out / "config.yaml").read_text())
    assert recorded["optim"]["lr"] == 0.5 and recorded["steps"] == 4
    trainer.fit()


def test_cosine_schedule_change_sets_the_next_steps_lr(trained):
    trainer = Trainer(trained(steps=4, **{"optim.schedule": "cosine", "optim.lr": 0.01}))
    # step 2 of 4 with cosine: 0.5 * (1 + cos(pi / 2)) = 0.5
    assert trainer.c.optimizer.param_groups[0]["lr"] == pytest.approx(0.005)


@pytest.mark.parametrize("change", [
    {"batch_size": 4}, {"seed": 1}, {"bottleneck.target_bits": 6.0}, {"model.arch": "vit-tiny"},
    {"ema_decay": 0.9}, {"optim.name": "sgd"},
])
def test_changes_that_break_the_run_are_refused(trained, change):
    recorded = trained().out + "/config.yaml"
    text = open(recorded).read()
    key = next(iter(change))
    with pytest.raises(ValueError, match=f"cannot resume .*{key.replace('.', '[.]')}"):
        Trainer(trained(**change))
    assert open(recorded).read() == text  # nothing rewritten


def test_config_changes_lists_each_field():
    old = {"optim": {"lr": 1e-3, "betas": [0.5, 0.9]}, "batch_size": 8, "loss": {"aux_weights": {}}}
    new = {"optim": {"lr": 1e-3, "betas": [0.9, 0.99]}, "batch_size": 8.0, "loss": {"aux_weights": {"x": 1.0}}}
    refused, applied = config_changes(old, new)
    assert refused == [] and applied == ["loss.aux_weights: {} -> {'x': 1.0}", "optim.betas: [0.5, 0.9] -> [0.9, 0.99]"]


def test_thread_count_is_recorded_and_a_mismatch_warned(tiny_config, caplog):
    from gaussquant.train.checkpoint import load_checkpoint

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        result = Trainer(tiny_config(steps=1, ckpt_every=1)).fit()
        assert load_checkpoint(result.checkpoint)[2]["num_threads"] == 1
        torch.set_num_threads(2)
        caplog.set_level(logging.WARNING)
        Trainer(tiny_config(steps=2, ckpt_every=1)).release()
    finally:
        torch.set_num_threads(threads)
    assert "written with 1 CPU threads, this process uses 2" in caplog.text
