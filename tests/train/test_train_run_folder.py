"""Run folders: resume finds the newest loadable checkpoint, pruning keeps what it wrote, one trainer at a time."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import tiny_overrides
from gaussquant.cli import main
from gaussquant.train.checkpoint import (
    RunLock, find_resume_checkpoint, list_checkpoints, read_latest, save_checkpoint,
)
from gaussquant.train.trainer import Trainer


def _save(root, step, keep_last=5):
    return save_checkpoint(root, step, meta={"step": step}, weights={"model": {"w": torch.full((2,), float(step))}},
                           training_state={"step": step}, keep_last=keep_last)


def test_resume_without_latest_continues_from_the_newest_checkpoint(tiny_config):
    cfg = tiny_config(steps=4, ckpt_every=2, keep_last=2)
    Trainer(cfg).fit()
    ckpts = cfg.out + "/checkpoints"
    os.remove(ckpts + "/latest")
    trainer = Trainer(tiny_config(steps=6, ckpt_every=2, keep_last=2))
    assert trainer.step == 4  # not a silent restart from step 0
    result = trainer.fit()
    assert result.checkpoint.is_dir() and result.checkpoint.name == "step_00000006"
    assert [p.name for p in list_checkpoints(ckpts)] == ["step_00000004", "step_00000006"]
    assert read_latest(ckpts) == result.checkpoint


def test_broken_latest_and_a_corrupt_newest_checkpoint_fall_back(tmp_path):
    root = tmp_path / "checkpoints"
    for step in (1, 2, 3):
        _save(root, step)
    (root / "step_00000003" / "training_state.pt").write_bytes(b"")
    for latest in ("step_00000009", "../../elsewhere", "/etc", "step_00000003"):
        (root / "latest").write_text(latest)
        step_dir, meta, _, state = find_resume_checkpoint(root)
        assert step_dir.name == "step_00000002" and state["step"] == 2
    (root / "latest").write_text("../outside")
    assert read_latest(root) is None  # latest never points outside its run folder
    for step_dir in list_checkpoints(root):
        (step_dir / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="none loads"):
        find_resume_checkpoint(root)
    assert len(list_checkpoints(root)) == 3  # nothing deleted


def test_pruning_never_deletes_the_checkpoint_just_written(tmp_path):
    root = tmp_path / "checkpoints"
    for step in (4, 8, 12):
        _save(root, step)
    written = _save(root, 2, keep_last=1)  # a run restarted from an earlier step
    assert written.is_dir() and read_latest(root) == written
    written = _save(root, 6, keep_last=2)
    names = [p.name for p in list_checkpoints(root)]
    assert names == ["step_00000004", "step_00000006", "step_00000008", "step_00000012"]
    _save(root, 7, keep_last=1)
    assert [p.name for p in list_checkpoints(root)] == ["step_00000007", "step_00000008", "step_00000012"]


def test_a_second_trainer_on_a_locked_run_folder_gets_a_clear_error(tmp_path, capsys):
    out = tmp_path / "run"
    with RunLock(out):
        with pytest.raises(RuntimeError, match=f"pid {os.getpid()}"):
            RunLock(out).acquire()
        argv = ["train", "--preset", "unet-tiny-gq"]
        for item in tiny_overrides(out, steps=2):
            argv += ["--set", item]
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "Traceback" not in err and "is in use by another training" in err
        assert not (out / "checkpoints").exists() and not (out / "metrics.jsonl").exists()
    RunLock(out).acquire().release()  # released


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path):
    code = (
        "import sys, time; from gaussquant.train.checkpoint import RunLock; "
        f"lock = RunLock({str(tmp_path)!r}).acquire(); print('locked', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=os.environ.copy())
    assert proc.stdout.readline().strip() == b"locked"
    with pytest.raises(RuntimeError, match="in use"):
        RunLock(tmp_path).acquire()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while True:
        try:
            RunLock(tmp_path).acquire().release()
            break
        except RuntimeError:
            assert time.time() < deadline
            time.sleep(0.05)


def test_loading_a_run_whose_latest_points_outside_is_an_error(tmp_path):
    from gaussquant.pretrained import resolve_model_dir

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "config.json").write_text("{}")
    root = tmp_path / "run" / "checkpoints"
    root.mkdir(parents=True)
    (root / "latest").write_text("../../elsewhere")
    with pytest.raises(ValueError, match="not a step directory of this run"):
        resolve_model_dir(tmp_path / "run")
