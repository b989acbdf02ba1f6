import json

import torch

from gaussquant.models.autoencoder import Autoencoder
from gaussquant.train.trainer import Trainer


def test_gan_schedule_tdc_accumulation_ema_and_outputs(tiny_config):
    cfg = tiny_config(**{
        "loss.gan.disc_start": 2, "loss.gan.disc.n_layers": 2, "loss.gan.disc.base_channels": 8,
        "optim.grad_accum": 2, "optim.schedule": "cosine", "ema_decay": 0.9, "steps": 3, "image_every": 3,
    })
    trainer = Trainer(cfg)
    disc_calls, tdc_calls = [], []
    trainer.c.disc_module.register_forward_pre_hook(lambda m, a: disc_calls.append(trainer.step))
    update = trainer.c.model_module.bottleneck.update_rate_controller
    trainer.c.model_module.bottleneck.update_rate_controller = lambda kl: (tdc_calls.append(kl.shape), update(kl))
    result = trainer.fit()

    assert result.step == 3
    # no discriminator forward before disc_start; then init (1) + G pass (2 micro-batches) + D step (2 x 2)
    assert disc_calls == [2] * 7
    # TDC: once per generator step, over both micro-batches (2 x batch 2 images)
    assert len(tdc_calls) == 3 and all(shape[0] == 4 for shape in tdc_calls)
    metrics = result.out / "metrics.jsonl"
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3]
    assert "d_loss" not in lines[1] and {"d_loss", "g_loss", "d_weight"} <= set(lines[2])
    assert {"kl_mean", "kl_min", "kl_max", "multiplier", "img_per_s", "lr"} <= set(lines[0])
    assert lines[2]["lr"] < lines[0]["lr"]  # cosine decay
    step_dir = result.checkpoint
    assert {p.name for p in step_dir.iterdir()} >= {
        "config.json", "model.safetensors", "ema.safetensors", "discriminator.safetensors", "training_state.pt"}
    assert (result.out / "images" / "step_000003.png").is_file() and (result.out / "config.yaml").is_file()
    assert any((result.out / "tb").iterdir()) 
    ema_model = Autoencoder.from_pretrained(result.out, use_ema=True)
    meta = ema_model.metadata
    assert meta["step"] == 3 and meta["train"]["loss"]["gan"]["disc_start"] == 2
    raw = Autoencoder.from_pretrained(result.out)
    assert any(not torch.equal(a, b) for a, b in zip(ema_model.state_dict().values(), raw.state_dict().values()))


def test_tiny_presets_with_other_bottlenecks_take_a_finite_step(tiny_config):
    # the gq presets run in the other tests; these cover the fixed-KL, VQ, LFQ and BSQ loss paths
    for name in ("unet-tiny-vanilla", "unet-tiny-vq", "vit-tiny-lfq", "vit-tiny-bsq"):
        trainer = Trainer(tiny_config(name, steps=1))
        before = [p.detach().clone() for p in trainer.c.model_module.parameters()]
        logs = trainer.train_step()
        assert torch.isfinite(logs["loss"]), name
        after = list(trainer.c.model_module.parameters())
        assert any(not torch.equal(a, b) for a, b in zip(before, after)), name
        trainer.release()  # the next preset trains into the same run folder
