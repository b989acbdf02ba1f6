"""Two gloo processes: identical TDC multipliers and weights on both ranks, and the same result as one
process with the same global batch (exactly comparable for the noise-free FSQ model).

The TDC all-reduce is checked on a crafted global batch whose two halves lie on opposite sides of the band
(``conftest.band_steps``): only a controller that all-reduces the sum, count, max and min of the KLs takes the
single process' decisions on both ranks. Breakage caught: removing any of the all-reduces in
``RateController._global_stats`` (the ranks then disagree with each other and with one process), or
averaging the ranks' means instead of summing the KLs and counts (wrong with unequal shares).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import band_steps
from gaussquant.pretrained import load_state_safetensors
from gaussquant.quantizers.gaussian import RateController

HERE = Path(__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(args, nproc, out, batch):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(HERE)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    cmd = [sys.executable, *args, str(HERE / "ddp_worker.py"), str(out), str(batch)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]


def test_two_gloo_ranks_agree_and_match_one_process(tmp_path):
    port = _free_port()
    launcher = ["-m", "torch.distributed.run", "--nproc-per-node=2", "--master-addr=127.0.0.1",
                f"--master-port={port}"]
    _launch(launcher, 2, tmp_path / "ddp", batch=2)
    _launch([], 1, tmp_path / "single", batch=4)
    for preset in ("unet-tiny-gq", "unet-tiny-fsq"):
        r0 = load_state_safetensors(tmp_path / "ddp" / f"{preset}-rank0.safetensors")
        r1 = load_state_safetensors(tmp_path / "ddp" / f"{preset}-rank1.safetensors")
        single = load_state_safetensors(tmp_path / "single" / f"{preset}-rank0.safetensors")
        for name in r0:
            assert torch.equal(r0[name], r1[name]), f"{preset}: {name} differs between ranks"
        multipliers = [k for k in r0 if "multiplier" in k]
        if preset == "unet-tiny-gq":
            assert multipliers, "the Gaussian model has TDC multiplier buffers"
            for name in multipliers:  # (the KL is far below target here: the band check below is the bite)
                assert torch.equal(r0[name], single[name]), name
            main = [k for k in multipliers if k.endswith(".multiplier")]
            assert main and all(not torch.equal(r0[k], torch.ones_like(r0[k])) for k in main), "never updated"
        else:
            init = load_state_safetensors(tmp_path / "single" / f"{preset}-init0.safetensors")
            moved = max((single[k] - init[k]).abs().max().item() for k in init)
            assert moved > 1e-3, "training did not move the weights; the comparison would be vacuous"
            for name in r0:
                torch.testing.assert_close(r0[name], single[name], rtol=1e-4, atol=1e-5, msg=name)
    assert (tmp_path / "ddp" / "unet-tiny-gq" / "checkpoints" / "latest").is_file()
    _check_band(tmp_path)


def _multipliers(rc: RateController) -> dict[str, float]:
    return {k: v.item() for k, v in rc.stats().items()}


def _check_band(tmp_path):
    """Both ranks' TDC multipliers equal one process' on the crafted opposite-side batch, step by step."""
    ddp = [json.loads((tmp_path / "ddp" / f"band-rank{r}.json").read_text()) for r in (0, 1)]
    single = json.loads((tmp_path / "single" / "band-rank0.json").read_text())
    f = 1.01
    by_hand = [(f, f, 1 / f), (1.0, f**2, 1 / f**2), (1 / f, f**3, 1 / f**3)]  # (lambda, lambda_max, lambda_min)
    for step, want in enumerate(by_hand):
        got = single[step]
        assert (got["multiplier"], got["multiplier_max"], got["multiplier_min"]) == pytest.approx(want, rel=1e-6)
    for rank in (0, 1):
        assert ddp[rank] == single, f"rank {rank}'s TDC multipliers differ from one process on the global batch"
        # the case bites: this rank's data alone would have taken other decisions
        local = RateController(8.0, tolerance_bits=0.5, factor=1.01)
        alone = []
        for parts in band_steps():
            local.update(parts[rank])
            alone.append(_multipliers(local))
        assert alone != single, f"rank {rank}'s own KLs lead to the same multipliers: the check would be vacuous"
