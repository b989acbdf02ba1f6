"""A diverging run stops at the first non-finite step, names its last good checkpoint and writes no NaN."""

import argparse

import pytest
import torch

from conftest import tiny_overrides
from gaussquant.cli import main
from gaussquant.pretrained import load_state_safetensors
from gaussquant.quantizers.gaussian import AdaptiveRateController, RateController
from gaussquant.train.checkpoint import list_checkpoints, save_checkpoint
from gaussquant.train.divergence import TrainingDiverged
from gaussquant.train.trainer import Trainer


def _all_finite(step_dir):
    for path in step_dir.glob("*.safetensors"):
        for name, t in load_state_safetensors(path).items():
            if t.is_floating_point() and not torch.isfinite(t).all():
                return False
    return True


def test_diverging_run_stops_and_keeps_its_last_good_checkpoint(tiny_config):
    cfg = tiny_config(**{"optim.lr": 1e4, "steps": 12, "ckpt_every": 1, "keep_last": 2})
    trainer = Trainer(cfg)
    with pytest.raises(TrainingDiverged, match=r"diverged at step (\d+).*last good checkpoint is .*step_0+") as info:
        trainer.fit()
    step = int(info.value.args[0].split("step ")[1].split(":")[0])
    kept = list_checkpoints(cfg.out + "/checkpoints")
    assert kept and all(_all_finite(d) for d in kept)
    assert kept[-1].name == f"step_{step - 1:08d}"  # every step before the divergence was saved; none after
    assert (trainer.out / "checkpoints" / "latest").read_text().strip() == kept[-1].name
    rc = trainer.c.model_module.bottleneck.rate_controller
    assert torch.isfinite(torch.stack([rc.multiplier, rc.multiplier_max, rc.multiplier_min])).all()


def test_diverging_run_on_the_command_line_is_one_sentence(tmp_path, capsys):
    argv = ["train", "--preset", "unet-tiny-gq"]
    for item in tiny_overrides(tmp_path / "run", **{"optim.lr": 1e4, "steps": 6}):
        argv += ["--set", item]
    assert main(argv) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("gaussquant train: error:")]
    assert "Traceback" not in err and len(errors) == 1
    assert "diverged at step" in errors[0] and "no checkpoint was written yet" in errors[0]
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("controller", [RateController, AdaptiveRateController])
def test_rate_controller_holds_its_multipliers_on_a_non_finite_kl(controller):
    """Both controllers (breaks if either update moves a multiplier on a NaN or inf KL)."""
    rc = controller(target_bits=4.0)
    rc.update(torch.full((2, 3), 9.0))  # a normal step moves them
    before = {k: v.clone() for k, v in rc.state_dict().items()}
    for bad in (float("nan"), float("inf"), -float("inf")):
        kl = torch.full((2, 3), 9.0)
        kl[0, 1] = bad
        rc.update(kl)
    assert all(torch.equal(v, before[k]) for k, v in rc.state_dict().items())


def test_checkpoint_writer_refuses_non_finite_tensors(tmp_path):
    root = tmp_path / "checkpoints"
    good = {"model": {"w": torch.ones(2)}}
    save_checkpoint(root, 1, meta={}, weights=good, training_state={"step": 1}, keep_last=1)
    poisoned = {"model": {"w": torch.tensor([1.0, float("nan")])}}
    with pytest.raises(ValueError, match="step 2: model.w holds NaN"):
        save_checkpoint(root, 2, meta={}, weights=poisoned, training_state={"step": 2}, keep_last=1)
    with pytest.raises(ValueError, match="training_state.optimizer.state.0.exp_avg"):
        save_checkpoint(root, 2, meta={}, weights=good, keep_last=1,
                        training_state={"optimizer": {"state": {0: {"exp_avg": torch.tensor([float("inf")])}}}})
    assert [p.name for p in list_checkpoints(root)] == ["step_00000001"]
    assert (root / "latest").read_text().strip() == "step_00000001"


def test_train_command_prints_non_finite_metrics_without_crashing(monkeypatch, tmp_path):
    from gaussquant.train import command, trainer

    result = trainer.TrainResult(out=tmp_path, step=3, checkpoint=tmp_path / "c",
                                 metrics={"kl_mean": "nan", "kl_min": 0.5, "kl_max": "inf"})
    monkeypatch.setattr(trainer, "run", lambda config, resume=False: result)
    args = argparse.Namespace(list_presets=False, overrides=[], data=None, steps=None, out=str(tmp_path),
                              config=None, preset="unet-tiny-gq", resume=False, init_from=None)
    assert command.main(args) == 0
