"""The demo's ``report.md`` and ``metrics.json``, its figures, and the terminal summary."""

from __future__ import annotations

import json
import math
from typing import Any

from gaussquant.demo.figures import live_kl, photo_grid, rate_quality, sample_grid
from gaussquant.eval.plots import plot_kl_histogram
from gaussquant.eval.report import protocol_table


def summary_rows(demo: Any) -> list[tuple[str, str, str, str]]:
    """``(quantity, continuous, GQ, gap)`` rows for the terminal and the report."""
    r = demo.results
    k = r["codebook_size"]
    rows = [("PSNR (dB), mean of the held-out photos", f"{r['continuous']['psnr']:.2f}", f"{r['psnr']:.2f}",
             f"{r['psnr'] - r['continuous']['psnr']:+.2f}")]
    for name, p in r["per_photo"].items():
        rows.append((f"PSNR {name} {p['size'][1]}x{p['size'][0]} (dB)", f"{p['continuous_psnr']:.2f}",
                     f"{p['psnr']:.2f}", f"{p['psnr'] - p['continuous_psnr']:+.2f}"))
    cast_c, cast_q = r["continuous"]["colour_cast_levels"], r["colour_cast_levels"]
    rows += [
        ("colour cast R/G/B, mean of the photos (uint8 levels)", "/".join(f"{v:+.1f}" for v in cast_c),
         "/".join(f"{v:+.1f}" for v in cast_q), ""),
        ("largest colour cast of one photo and channel", f"{r['continuous']['colour_cast_max_levels']:.1f}",
         f"{r['colour_cast_max_levels']:.1f}", ""),
        ("rate: bits per token / bpp", "-", f"{r['bits_per_token']:.0f} / {r['bpp']:.3f} (K = {k})", ""),
        ("codebook usage / index entropy", "-",
         f"{r['codebook_usage']:.3f} / {r['index_entropy_bits']:.2f} of {math.log2(k):.0f} bits", ""),
        ("group KL bits mean / min / max", f"{r['kl_bits']['mean']:.2f} / {r['kl_bits']['min']:.2f} / "
         f"{r['kl_bits']['max']:.2f}", "", ""),
    ]
    for point in r["rate_quality"]:
        if point["codebook_size"] != k:
            rows.append((f"PSNR at K = {point['codebook_size']} ({point['bpp']:.3f} bpp)", "-",
                         f"{point['psnr']:.2f}", ""))
    if "prior" in r:
        p = r["prior"]
        rows.append((f"tiny prior ({p['steps']} steps, {p['train_seconds']:.0f} s): held-out NLL, bits per token",
                     "-", f"{p['held_out_bits_per_token']:.2f} of {p['rate_bits_per_token']:.0f}", ""))
    live = r["live"]
    rows.append((f"live model ({live['steps']} steps, {live['train_seconds']:.0f} s) PSNR",
                 f"{live['continuous_psnr']:.2f}", f"{live['psnr']:.2f}",
                 f"{live['psnr'] - live['continuous_psnr']:+.2f}"))
    return rows


def format_summary(demo: Any) -> str:
    """The summary as an aligned plain-text table."""
    rows = [("quantity", "continuous", "GQ (from tokens)", "gap")] + summary_rows(demo)
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def _comparison(r: dict[str, Any], bundled_steps: Any) -> str:
    live = r["live"]
    gap = r["continuous"]["psnr"] - live["continuous_psnr"]
    in_band = 100 * live["fraction_in_band_end"]
    return (
        f"The live model is the bundled model's recipe (same preset, architecture, data and 8-bit target) trained "
        f"from scratch here for {live['steps']} steps ({live['train_seconds']:.0f} s) against the bundled model's "
        f"{bundled_steps} steps (docs/demo_model.md), with a constant learning rate and a faster TDC multiplier "
        f"step (1.03 instead of 1.01) to suit a run of minutes. Its held-out PSNR is {live['continuous_psnr']:.2f} "
        f"dB continuous and {live['psnr']:.2f} dB GQ, {abs(gap):.2f} dB {'below' if gap >= 0 else 'above'} the "
        f"bundled model. TDC did its part: the mean group KL of the fixed held-out crops went from "
        f"{live['kl_bits_mean_start']:.2f} bits at step 0 to {live['kl_bits_mean_end']:.2f} bits (target 8), "
        f"but only {in_band:.0f}% of group tokens are within log2 K +- 0.5 yet (the bundled model: "
        f"{100 * r['fraction_in_band']:.0f}% on the whole photos): the per-token multipliers narrow the spread "
        f"over hundreds more steps. The difference in quality is training length: an encoder and decoder of "
        f"{live['steps']} steps have not learnt to use their 16 bits per token as well as those of "
        f"{bundled_steps} steps."
    )


def write_demo_report(demo: Any, meta: dict[str, Any], live: Any, report: Any) -> None:
    """Write ``report.md``, ``metrics.json`` and the figures into ``demo.out``."""
    out, r = demo.out, demo.results
    k = r["codebook_size"]
    rows = []
    for p in demo.photos:
        cells = [(p.original, "original"), (p.continuous.image, f"{p.continuous.psnr:.2f} dB"),
                 (p.gq[k].image, f"{p.gq[k].psnr:.2f} dB")]
        rows.append((p.name, cells))
    photo_grid(rows, ["original", "continuous (posterior mean)", f"GQ, K = {k}, decoded from tokens/"],
               out / "photos.png")
    live_rows = []
    for p, q in zip(demo.photos, demo.live_photos):
        live_rows.append((p.name, [(p.original, "original"), (p.gq[k].image, f"{p.gq[k].psnr:.2f} dB"),
                                   (q.gq[k].image, f"{q.gq[k].psnr:.2f} dB")]))
    photo_grid(live_rows, ["original", "bundled model, GQ", f"live model ({live.steps} steps), GQ"],
               out / "live_vs_bundled.png", min_tile=256)
    rate_quality([(p["codebook_size"], p["bpp"], p["psnr"]) for p in r["rate_quality"]], r["continuous"]["psnr"],
                 out / "rate_quality.png", float(meta["bottleneck"]["target_bits"]))
    plot_kl_histogram(report.histogram_counts, report.histogram_edges, math.log2(k), out / "kl_histogram.png",
                      title="bundled model: group KL on the held-out photos vs log2 K")
    live_kl([(s.step, s.seconds, s.kl_bits) for s in live.snapshots], live.log, math.log2(k),
            out / "live_kl.png")
    generation: list[str] = []
    if demo.prior is not None:
        from gaussquant.demo.generation import prior_paragraph

        sample_grid(demo.prior.training_crops, demo.prior.samples, out / "samples.png")
        p = r["prior"]
        generation = [
            "## Generated samples: a tiny prior over the tokens", "",
            "![training crops and generated samples](samples.png)", "",
            f"Each tile is {p['crop_size']}x{p['crop_size']} px ({'x'.join(str(v) for v in p['token_grid'])} "
            "tokens), enlarged by pixel repetition. " + prior_paragraph(p), "",
        ]
    r["warnings"] = list(demo.warnings)
    (out / "metrics.json").write_text(json.dumps(r, indent=2, sort_keys=True))
    steps = meta.get("source_step") or meta.get("step")
    lines = [
        "# gaussquant demo", "",
        f"The bundled tokenizer `{meta.get('name', 'unet-demo-gq')}` (a tiny UNet Gaussian VAE trained with TDC "
        f"for {steps} steps; docs/demo_model.md has its training command and log) converted to GQ without "
        f"training, on three held-out photos it never saw, whole and at full resolution (longer side at most "
        f"{r['max_side']} px). Rate: {r['bits_per_token']:.0f} bits per 4x4-pixel token = {r['bpp']:.3f} bpp. "
        f"Whole demo: {r['timings']['total_s']:.0f} s on {r['threads']} thread(s).", "",
        "## Held-out photos, decoded from their token files", "",
        "![original | continuous | GQ](photos.png)", "",
        "| quantity | continuous | GQ (from tokens) | gap |", "| --- | --- | --- | --- |",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in summary_rows(demo)], "",
        "The colour cast is the mean difference per channel between reconstruction and original in uint8 "
        "levels (0 = none; a few levels are invisible, tens are a tint). Per photo it is in `metrics.json`.", "",
        "## Rate and quality: one model, three codebook sizes", "",
        f"The same Gaussian VAE converted at K = {', '.join(str(p['codebook_size']) for p in r['rate_quality'])} "
        f"(one Sobol codebook each, no training): a larger K spends more bits per token and follows the "
        "posterior more closely; the continuous reconstruction bounds what any K can reach.", "",
        "![rate-quality](rate_quality.png)", "",
        "| K | bits per token | bpp | PSNR (dB) |", "| --- | --- | --- | --- |",
        *[f"| {p['codebook_size']} | {p['bits_per_token']:.0f} | {p['bpp']:.3f} | {p['psnr']:.2f} |"
          for p in r["rate_quality"]], "",
        "## Group KL of the bundled model", "",
        "![group KL](kl_histogram.png)", "",
        "```", report.to_text(), "```", "",
        "## Live: a fresh model trained now, TDC at work", "",
        "![live KL](live_kl.png)", "",
        _comparison(r, steps), "",
        "![live vs bundled](live_vs_bundled.png)", "",
        *generation,
        "## Warnings printed during the run", "",
        *([f"- {w}" for w in demo.warnings] or ["- none"]), "",
        "## Protocol", "", protocol_table(r["protocol"]), "",
        "## Files", "",
        f"- `model/`: the GQ model (K = {k}) the token files were written with; `gaussquant decode model "
        "tokens/NAME.npz --out DIR` decodes them in the windows the files record, as above",
        "- `tokens/NAME.npz`: one token file per photo", "- `live/`: the live training run (metrics.jsonl, "
        "checkpoint)",
        *(["- `prior/`: the crops' token files and the prior's run folder (`run/`)"] if demo.prior else []),
        "- `metrics.json`: every number above", "",
    ]
    demo.report.write_text("\n".join(lines))
