"""Launched by test_train_ddp.py under torch.distributed.run: train tiny configs, save every rank's state."""

import gc
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from conftest import band_steps, tiny_overrides
from gaussquant.quantizers.gaussian import GaussianBottleneck
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

# The TDC controller on a crafted global batch whose halves lie on opposite sides of the band (T = 8,
# tau = 0.5): rank 0 sees only KLs above T + tau, rank 1 only KLs below T - tau (and in the last step an
# unequal share of the images), so per-rank statistics would take other decisions than the global batch.
# Rank r updates from its part, the single process from the whole batch; every rank saves its multipliers.
band = GaussianBottleneck(8, 4, target_bits=8.0, tolerance_bits=0.5, factor=1.01)
world = dist.get_world_size() if dist.is_initialized() else 1
history = []
for part0, part1 in band_steps():
    mine = torch.cat([part0, part1]) if world == 1 else (part0, part1)[rank]
    band.update_rate_controller(mine)
    history.append({k: v.item() for k, v in band.rate_controller.stats().items()})
(out / f"band-rank{rank}.json").write_text(json.dumps(history))
if dist.is_initialized():
    # drop the last DDP wrapper (it holds the process group) before destroying the group: a gloo group that
    # outlives destroy_process_group() until interpreter shutdown can abort the rank ("terminate called ...")
    del trainer
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
