"""`prior train` under torchrun: 2 gloo ranks of batch B train like 1 process of batch 2B, keep identical
weights, and resume from the checkpoints rank 0 alone wrote.

Breakage caught: every rank drawing the same rows (or the first B of the global batch) instead of its own
slice, gradients not averaged across ranks (no DDP), ranks writing or reading different checkpoints, a resumed
run losing the batch generator's or the optimiser's state.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from gaussquant.pretrained import load_state_safetensors
from prior_fixtures import random_grids, write_tokens

HERE = Path(__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(out: Path, tokens: Path, batch: int, mode: str, nproc: int, timeout: float = 300) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(HERE)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    launcher = (["-m", "torch.distributed.run", f"--nproc-per-node={nproc}", "--master-addr=127.0.0.1",
                 f"--master-port={_free_port()}"] if nproc > 1 else [])
    cmd = [sys.executable, *launcher, str(HERE / "prior_ddp_worker.py"), str(out), str(tokens), str(batch), mode]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]


def _load(path: Path) -> dict[str, torch.Tensor]:
    return load_state_safetensors(path)


def test_two_gloo_ranks_match_one_process_and_resume(tmp_path):
    tokens = write_tokens(tmp_path / "train.npz", random_grids(32, groups=2, grid=(2, 3), codebook_size=16, seed=0),
                          codebook_size=16)
    _launch(tmp_path / "ddp", tokens, 2, "straight", nproc=2)
    _launch(tmp_path / "single", tokens, 4, "straight", nproc=1)
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    r0, r1 = _load(ddp / "straight-rank0.safetensors"), _load(ddp / "straight-rank1.safetensors")
    one = _load(single / "straight-rank0.safetensors")
    saved = [_load(ddp / f"straight-ckpt-rank{r}.safetensors") for r in (0, 1)]
    for name in r0:
        assert torch.equal(r0[name], r1[name]), f"{name} differs between the ranks"
        assert torch.equal(saved[0][name], r0[name]) and torch.equal(saved[1][name], r0[name]), name
        # AdamW: float-rounding differences of the gradient sums (and the key bias, whose true gradient is 0:
        # softmax ignores a shift shared by all keys) move weights by ~1e-6, far below a step's ~3e-3
        torch.testing.assert_close(r0[name], one[name], rtol=1e-4, atol=1e-5, msg=name)
    # the comparison bites: one process with batch 2 (what one rank's slice alone would train) ends elsewhere
    _launch(tmp_path / "half", tokens, 2, "straight", nproc=1)
    half = _load(tmp_path / "half" / "straight-rank0.safetensors")
    assert max((half[k] - one[k]).abs().max().item() for k in one) > 100 * 1e-5
    # rank 0 wrote the checkpoints (the last two kept); the interrupted run stopped with step 4 on disk
    assert sorted(p.name for p in (ddp / "straight" / "checkpoints").glob("step_*")) == ["step_00000004",
                                                                                        "step_00000006"]
    assert sorted(p.name for p in (ddp / "interrupted" / "checkpoints").glob("step_*"))[-1] == "step_00000004"
    _launch(ddp, tokens, 2, "resume", nproc=2)
    for r in (0, 1):
        resumed = _load(ddp / f"resumed-rank{r}.safetensors")
        for name in r0:
            assert torch.equal(resumed[name], r0[name]), f"rank {r}: {name} differs after resuming"


def test_a_rank_out_of_time_stops_every_rank_at_the_same_step(tmp_path):
    """``max_seconds`` under torchrun: rank 1 alone runs out of time after step 3 (its clock jumps); the
    all-reduced stop makes rank 0 stop there too, rank 0 checkpoints step 3, and both hold the same weights.
    Without it rank 0 would go on to step 4 and block in its all-reduce until the launch times out."""
    tokens = write_tokens(tmp_path / "train.npz", random_grids(32, groups=2, grid=(2, 3), codebook_size=16, seed=0),
                          codebook_size=16)
    _launch(tmp_path, tokens, 2, "timed", nproc=2, timeout=180)
    r0, r1 = _load(tmp_path / "timed-rank0.safetensors"), _load(tmp_path / "timed-rank1.safetensors")
    for name in r0:
        assert torch.equal(r0[name], r1[name]), f"{name} differs between the ranks"
    steps = sorted(p.name for p in (tmp_path / "timed" / "checkpoints").glob("step_*"))
    assert steps[-1] == "step_00000003", steps  # stopped (and checkpointed) at step 3 of 6, on every rank
