"""The models benchmark: one in-process measurement (no worker) and its table."""

from types import SimpleNamespace

import torch

from gaussquant.bench import models as models_bench
from gaussquant.bench.models import ModelBenchRow, _measure, format_table
from gaussquant.models.presets import ModelConfig


def test_measure_and_table():
    row = _measure("vit-tiny", image_size=8, batch_size=1, steps=1, seed=0, threads=None)
    assert isinstance(row, ModelBenchRow) and row.arch == "vit-tiny"
    assert row.images_per_s > 0 and row.peak_rss_mib > 0 and row.step_peak_mib >= 0
    table = format_table([row])
    assert "load average" in table and "| vit-tiny | 8 | 1 |" in table


def test_measure_reports_the_work_it_timed(monkeypatch):
    """With a fake clock (0.5 s for the timed loop), the row's throughput is exactly batch x steps / 0.5 s
    and its ms/step 500 / steps; the model ran steps + 1 forward passes (one warm-up) at the asked batch;
    params_m counts every parameter of the model that ran.

    Catches: a throughput that forgets the steps or the batch, a warm-up inside the timed loop, and
    parameters counted for one half of the model.
    """
    ticks = iter([100.0, 100.5])
    monkeypatch.setattr(models_bench, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))
    built, batches = [], []
    real_build = models_bench.build_autoencoder

    def build(*args, **kwargs):
        model = real_build(*args, **kwargs)
        model.register_forward_hook(lambda module, inputs, output: batches.append(inputs[0].shape[0]))
        built.append(model)
        return model

    monkeypatch.setattr(models_bench, "build_autoencoder", build)
    batch, steps = 2, 3
    row = _measure("unet-tiny", image_size=16, batch_size=batch, steps=steps, seed=0, threads=None)
    assert row.images_per_s == batch * steps / 0.5
    assert abs(row.ms_per_step - 500.0 / steps) < 1e-9
    assert batches == [batch] * (steps + 1)
    assert row.params_m == sum(p.numel() for p in built[0].parameters()) / 1e6


def _saved_activation_mib(arch: str, image_size: int, batch_size: int) -> float:
    """MiB of the distinct non-parameter tensors autograd saves for backward in one forward of the
    benchmarked model: all alive at once at the end of the forward, so a lower bound on a step's peak."""
    cfg = ModelConfig(arch=arch, image_size=image_size)
    model = models_bench.build_autoencoder(cfg, models_bench._PassThrough(cfg.z_channels)).train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    x = torch.rand(batch_size, 3, image_size, image_size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return sum(saved.values()) / 2**20


def test_memory_figures_hold_at_least_one_steps_activations():
    """In the benchmark's own fresh worker process, the step peak is at least half the activations autograd
    saves in one forward (about 170 MiB here; the half allows for memory freed while building the model and
    reused without growing the resident set), and the peak RSS at least the step peak plus the weights.
    Catches: a step peak taken after the warm-up (it then reads 8-22 MiB: the warm-up already set the
    maximum), figures in the wrong unit (KiB or GiB for MiB), and a peak read from ``ru_maxrss``, which a
    spawned worker inherits from its parent on Linux (under the full test suite, a parent of about 660 MiB,
    the step peak then read 0).

    64 px x 8 images: the step dwarfs the process' import-time peak; at 16 px x 2 the lifetime maximum RSS
    that ``ru_maxrss`` reports was sometimes set before the steps (step peak 0).
    """
    (row,) = models_bench.run(("unet-tiny",), image_size=64, batch_size=8, steps=1, seed=0, threads=1)
    activations_mib = _saved_activation_mib("unet-tiny", 64, 8)
    assert activations_mib > 50
    assert row.step_peak_mib >= 0.5 * activations_mib, (row.step_peak_mib, activations_mib)
    assert row.peak_rss_mib >= row.step_peak_mib + 4 * row.params_m * 1e6 / 2**20
    assert row.peak_rss_mib < 4096  # MiB: a tiny model in one process
