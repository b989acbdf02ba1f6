"""GPU readiness checked on CPU: ``precision: bf16`` (autocast) and ``compile: true`` agree with float32.

Tolerances (measured values on the tiny presets in brackets, 2026-12-01):
- bf16 autocast, one forward + objective + backward of a batch of 4 at 32 px: reconstruction max |diff| < 0.1
  and mean |diff| < 0.02 on a [-1, 1] scale [0.034 / 0.005 UNet, 0.004 / 0.0005 ViT]; loss relative
  difference < 1e-2 [2e-4]; gradient cosine similarity > 0.99 [0.996 UNet, 0.9999 ViT]; mean KL per group
  within 0.01 bits [4e-5] (the bottleneck computes KL in float32 under autocast);
- bf16 training, 4 Adam steps of unet-tiny-gq at 16 px: the first step's loss within 1e-3 relative
  [1e-4], every step's loss within 5e-2 [up to 0.028 at step 4: Adam's first steps are about
  lr * sign(gradient), so bf16 noise flips the update of parameters whose gradient is near zero], and the
  cosine between the two runs' weight changes > 0.8 [0.886];
- ``torch.compile``: the graph capture (``aot_eager`` backend: dynamo + AOT autograd, no code generation)
  equals eager to 1e-6; the trainer's own ``compile: true`` (inductor, minutes on 2 CPU cores) is ``slow``:
  over 2 steps the losses agree to 1e-4 relative and fewer than 0.1% of the weights differ by more than
  1e-5 [370 of 896,696, at most 2.0e-4 = 2 steps of Adam's lr-sized moves in the other direction].
"""

from __future__ import annotations

import json

import pytest
import torch

from gaussquant.models.presets import build_autoencoder
from gaussquant.quantizers.build import build_bottleneck
from gaussquant.train.config import load_config
from gaussquant.train.setup import build_objective
from gaussquant.train.trainer import Trainer


def _model_and_objective(preset: str):
    cfg = load_config(preset, [])
    torch.manual_seed(0)  # the tiny model's weights; tests only
    return build_autoencoder(cfg.model, build_bottleneck(cfg.bottleneck)), build_objective(cfg)


def _pass(model, objective, x, bf16: bool, forward=None):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = (model if forward is None else forward)(x, generator=torch.Generator().manual_seed(2))
        loss = objective(x, out.x_hat, out.bottleneck).loss
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return out.x_hat.detach().float(), float(loss.detach()), grads, out.bottleneck.kl_bits.detach().float()


@pytest.mark.parametrize("preset", ["unet-tiny-gq", "vit-tiny-gq"])
def test_bf16_autocast_agrees_with_float32(preset):
    model, objective = _model_and_objective(preset)
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    ref, low = _pass(model, objective, x, False), _pass(model, objective, x, True)
    diff = (ref[0] - low[0]).abs()
    assert diff.max() < 0.1 and diff.mean() < 0.02
    assert diff.max() > 0, "autocast changed nothing: the comparison would be vacuous"
    assert abs(ref[1] - low[1]) < 1e-2 * abs(ref[1])
    assert torch.nn.functional.cosine_similarity(ref[2], low[2], dim=0) > 0.99
    assert abs(float(ref[3].mean()) - float(low[3].mean())) < 0.01


def _weights(trainer):
    return torch.cat([p.detach().flatten().clone() for p in trainer.c.model_module.parameters()])


def test_bf16_training_moves_the_weights_like_float32(tiny_config, tmp_path):
    changes, losses = [], []
    for precision in ("fp32", "bf16"):
        trainer = Trainer(tiny_config(out=tmp_path / precision, precision=precision, device="cpu"))
        start = _weights(trainer)
        result = trainer.fit()
        assert result.step == 4
        changes.append(_weights(trainer) - start)
        lines = (result.out / "metrics.jsonl").read_text().splitlines()
        losses.append(torch.tensor([json.loads(line)["loss"] for line in lines]))
    assert changes[0].norm() > 0
    assert torch.nn.functional.cosine_similarity(changes[0], changes[1], dim=0) > 0.8
    torch.testing.assert_close(losses[1][0], losses[0][0], rtol=1e-3, atol=0)  # same weights: same loss
    torch.testing.assert_close(losses[1], losses[0], rtol=5e-2, atol=0)  # then the runs drift a little


def test_compiled_graph_capture_equals_eager():
    model, objective = _model_and_objective("unet-tiny-gq")
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    eager = _pass(model, objective, x, False)
    compiled = _pass(model, objective, x, False, forward=torch.compile(model, backend="aot_eager"))
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(compiled[2], eager[2], rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # inductor compiles C++ kernels: about 3 minutes on a loaded 2-core machine
def test_trainer_compile_option_agrees_with_eager(tiny_config, tmp_path):
    weights, losses = [], []
    for compile_ in (False, True):
        trainer = Trainer(tiny_config("vit-tiny-gq", out=tmp_path / str(compile_), steps=2, compile=compile_,
                                      device="cpu"))
        result = trainer.fit()
        weights.append(_weights(trainer))
        lines = (result.out / "metrics.jsonl").read_text().splitlines()
        losses.append(torch.tensor([json.loads(line)["loss"] for line in lines]))
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-4, atol=0)
    # Adam moves each weight by about lr per step whatever the gradient's size, so a weight whose gradient
    # is ~0 may step the other way after rounding differences: allow that on a few weights only
    lr = trainer.cfg.optim.lr
    differ = (weights[1] - weights[0]).abs() > 1e-5
    assert differ.float().mean() < 1e-3 and (weights[1] - weights[0]).abs().max() <= 2 * 2 * lr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_training_step_is_finite_and_close_to_float32(tiny_config, tmp_path):
    losses = []
    for precision in ("fp32", "bf16"):
        trainer = Trainer(tiny_config(out=tmp_path / precision, precision=precision, device="cuda", steps=1))
        result = trainer.fit()
        losses.append(result.metrics["loss"])
    assert abs(losses[1] - losses[0]) < 1e-2 * abs(losses[0])
