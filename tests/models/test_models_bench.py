"""The models benchmark: one in-process measurement (no worker) and its table."""

from types import SimpleNamespace

from gaussquant.bench import models as models_bench
from gaussquant.bench.models import ModelBenchRow, _measure, format_table


def test_measure_and_table():
    row = _measure("vit-tiny", image_size=8, batch_size=1, steps=1, seed=0, threads=None)
    assert isinstance(row, ModelBenchRow) and row.arch == "vit-tiny"
    assert row.images_per_s > 0 and row.peak_rss_mib > 0 and row.step_peak_mib >= 0
    table = format_table([row])
    assert "load average" in table and "| vit-tiny | 8 | 1 |" in table


def test_measure_reports_the_work_it_timed(monkeypatch):
    """With a fake clock (0.5 s for the timed loop), the row's throughput is exactly batch x steps / 0.5 s
    and its ms/step 500 / steps; the model ran steps + 1 forward passes (one warm-up) at the asked batch;
    params_m counts every parameter of the model that ran; the memory figures are at least what the
    timed steps must hold: the gradients of every parameter (step peak) on top of the weights (peak RSS).

    Catches: a throughput that forgets the steps or the batch, a warm-up inside the timed loop, parameters
    counted for one half of the model, and a step peak taken after the warm-up (which hides the step).
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
    params = sum(p.numel() for p in built[0].parameters())
    assert row.params_m == params / 1e6
    grads_mib = 4 * params / 2**20  # float32 gradients, set to None before every step
    assert row.step_peak_mib >= grads_mib
    assert row.peak_rss_mib >= row.step_peak_mib + grads_mib  # the weights were resident before the steps
