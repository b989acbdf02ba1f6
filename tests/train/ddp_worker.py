"""Launched by test_train_ddp.py under torch.distributed.run: train tiny configs, save every rank's state."""

import sys
from pathlib import Path

import torch.distributed as dist

from conftest import tiny_overrides
from gaussquant.pretrained import save_state_safetensors
from gaussquant.train.config import load_config
from gaussquant.train.trainer import Trainer

out, batch = Path(sys.argv[1]), int(sys.argv[2])
for preset in ("unet-tiny-gq", "unet-tiny-fsq"):
    # SGD: Adam turns the float-rounding noise of near-zero gradients (conv biases before GroupNorm) into
    # full-size steps, so only a linear update rule can show 1-vs-2-process equality tightly
    extra = {"optim.name": "sgd", "optim.lr": 1e-4} if preset.endswith("fsq") else {}
    cfg = load_config(preset, tiny_overrides(out / preset, batch_size=batch, steps=3, **extra))
    trainer = Trainer(cfg)
    rank = dist.get_rank() if dist.is_initialized() else 0
    save_state_safetensors(trainer.c.model_module.state_dict(), out / f"{preset}-init{rank}.safetensors")
    trainer.fit()
    save_state_safetensors(trainer.c.model_module.state_dict(), out / f"{preset}-rank{rank}.safetensors")
if dist.is_initialized():
    dist.destroy_process_group()
