"""SIGKILL a tiny run after its first checkpoint, resume it, and reach the same weights bit for bit."""

import os
import signal
import subprocess
import sys
import time

import torch

from conftest import tiny_overrides
from gaussquant.pretrained import load_state_safetensors
from gaussquant.train.config import load_config
from gaussquant.train.trainer import run

STEPS = 10


def _final_weights(out):
    latest = (out / "checkpoints" / "latest").read_text().strip()
    return load_state_safetensors(out / "checkpoints" / latest / "model.safetensors")


def test_sigkill_and_resume_reaches_the_same_weights(tmp_path):
    extra = dict(steps=STEPS, ckpt_every=2, keep_last=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # same kernels as the one-thread subprocess below, so results compare bitwise
    try:
        reference = run(load_config("unet-tiny-gq", tiny_overrides(tmp_path / "ref", **extra)))
        assert reference.step == STEPS

        killed = tmp_path / "killed"
        cmd = [sys.executable, "-m", "gaussquant", "train", "--preset", "unet-tiny-gq"]
        for item in tiny_overrides(killed, **extra):
            cmd += ["--set", item]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while not (killed / "checkpoints" / "latest").exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "no checkpoint within 60 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        stopped_at = int((killed / "checkpoints" / "latest").read_text().strip().split("_")[1])
        assert stopped_at < STEPS, "the run finished before it was killed"

        resumed = run(load_config("unet-tiny-gq", tiny_overrides(killed, **extra)), resume=True)
    finally:
        torch.set_num_threads(threads)
    assert resumed.step == STEPS
    a, b = _final_weights(tmp_path / "ref"), _final_weights(killed)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    steps_logged = [int(line.split(",")[0].split(":")[1]) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps_logged == list(range(1, STEPS + 1))
