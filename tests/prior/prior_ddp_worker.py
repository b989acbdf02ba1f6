"""Launched by test_prior_ddp.py (under torch.distributed.run, or plain): train priors, save every rank's weights.

argv: OUT TOKENS BATCH MODE, MODE one of ``straight`` (train 6 steps; then an interrupted run stopped after
step 5, whose last checkpoint, step 4, is rank 0's), ``resume`` (rerun the interrupted run to 6 steps) or
``timed`` (``max_seconds`` = 1000, and rank 1's clock jumps 2000 s ahead after step 3: only rank 1 is out of
time, and every rank must stop at step 3 with it; a rank that kept going would wait forever in the next step's
all-reduce).
Each rank saves the weights it holds in memory (``NAME-rankR``) and those of the final checkpoint as it reads
it (``NAME-ckpt-rankR``).
"""

import gc
import os
import sys
import time
import types
from pathlib import Path

import torch.distributed as dist

import gaussquant.prior.train as prior_train
from gaussquant.pretrained import save_state_safetensors
from gaussquant.prior.store import load_prior

out, tokens, batch, mode = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
KW = dict(steps=6, batch_size=batch, checkpoint_every=2, lr=3e-3)
RANK = int(os.environ.get("RANK", "0"))
TRAINED = []


class Recorded(prior_train.TokenPrior):
    """The prior train_prior builds, remembered so that this rank's in-memory weights can be saved."""

    def __init__(self, config):
        super().__init__(config)
        TRAINED.append(self)


prior_train.TokenPrior = Recorded


class Interrupt(Exception):
    pass


def stop_after_5(step, loss):
    if step == 5:
        raise Interrupt  # on every rank, after step 5: step 4's checkpoint is the last on disk


def save(name: str, final: Path) -> None:
    save_state_safetensors(TRAINED[-1].state_dict(), out / f"{name}-rank{RANK}.safetensors")
    save_state_safetensors(load_prior(final).model.state_dict(), out / f"{name}-ckpt-rank{RANK}.safetensors")


if mode == "timed":
    offset = [0.0]
    prior_train.time = types.SimpleNamespace(perf_counter=lambda: time.perf_counter() + offset[0])

    def jump_after_3(step, loss):
        if step == 3 and RANK == 1:
            offset[0] = 2000.0

    save("timed", prior_train.train_prior(tokens, out / "timed", on_step=jump_after_3, max_seconds=1000.0, **KW))
elif mode == "straight":
    save("straight", prior_train.train_prior(tokens, out / "straight", **KW))
    try:
        prior_train.train_prior(tokens, out / "interrupted", on_step=stop_after_5, **KW)
    except Interrupt:
        pass
else:
    save("resumed", prior_train.train_prior(tokens, out / "interrupted", **KW))
if dist.is_initialized():
    TRAINED.clear()  # as in ddp_worker.py: nothing that held the group survives to interpreter shutdown
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
