"""The markdown evaluation report: every number stands beside its protocol (data, resolution, count, metric code).

``write_report`` takes the result dict of :func:`gaussquant.eval.evaluate.evaluate` plus the few tensors the
figures need and writes ``report.md``, ``metrics.json``, ``reconstructions.png`` (original | continuous |
quantized), ``kl_histogram.png`` (group KL against log2 K) and ``codebook_usage.png`` into one folder.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from gaussquant.eval.plots import plot_codebook_usage, plot_kl_histogram, save_image_grid

# (key, label, format, higher is better?)
METRIC_ROWS: tuple[tuple[str, str, str, bool], ...] = (
    ("psnr", "PSNR (dB, uint8)", "{:.2f}", True),
    ("ssim", "SSIM", "{:.4f}", True),
    ("ms_ssim", "MS-SSIM", "{:.4f}", True),
    ("lpips_vgg", "LPIPS (VGG)", "{:.4f}", False),
    ("lpips_alex", "LPIPS (AlexNet)", "{:.4f}", False),
    ("rfid", "rFID (Inception pool3)", "{:.3f}", False),
    ("fd_effnet_lite0", "FD EfficientNet-Lite0 (not rFID)", "{:.3f}", False),
)


def _fmt(value: Any, spec: str = "{:.4f}") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (int, float)):
        return spec.format(value)
    return str(value)


def metrics_table(results: Mapping[str, Any]) -> str:
    """The markdown metrics table: quantized, and for GQ the continuous posterior mean and the gap."""
    cont = results.get("continuous")
    head = "| metric | quantized (tokens) | continuous (posterior mean) | gap |" if cont else "| metric | value |"
    lines = [head, "| --- | --- | --- | --- |" if cont else "| --- | --- |"]
    for key, label, spec, _ in METRIC_ROWS:
        if key not in results and not (cont and key in cont):
            continue
        q = results.get(key)
        if not cont:
            lines.append(f"| {label} | {_fmt(q, spec)} |")
            continue
        c = cont.get(key)
        gap = q - c if isinstance(q, (int, float)) and isinstance(c, (int, float)) else None
        lines.append(f"| {label} | {_fmt(q, spec)} | {_fmt(c, spec)} | {_fmt(gap, spec)} |")
    return "\n".join(lines)


def rate_table(results: Mapping[str, Any]) -> str:
    """Rate and codebook statistics (bits per token, bpp, usage, index entropy, perplexity)."""
    rows = [
        ("codebook size K", results.get("codebook_size"), "{:d}"),
        ("groups per token G", results.get("num_groups"), "{:d}"),
        ("tokens per image", results.get("tokens_per_image"), "{:d}"),
        ("bits per token (G log2 K)", results.get("bits_per_token"), "{:.3f}"),
        ("bits per pixel", results.get("bpp"), "{:.4f}"),
        ("codebook usage (mean over groups)", results.get("codebook_usage"), "{:.4f}"),
        ("index entropy (bits, mean over groups)", results.get("index_entropy_bits"), "{:.3f}"),
        ("perplexity (mean over groups)", results.get("perplexity"), "{:.1f}"),
    ]
    lines = ["| quantity | value |", "| --- | --- |"]
    lines += [f"| {name} | {_fmt(value, spec)} |" for name, value, spec in rows if value is not None]
    per_group = results.get("codebook_usage_per_group")
    if per_group and len(per_group) > 1:
        lines.append("| usage per group | " + ", ".join(f"{u:.3f}" for u in per_group) + " |")
    return "\n".join(lines)


def protocol_table(protocol: Mapping[str, Any]) -> str:
    """Every protocol entry as a table row (nested dicts flattened with dots; entries that are None, i.e.
    do not apply, are left out)."""
    lines = ["| item | value |", "| --- | --- |"]

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif value is not None:
            lines.append(f"| {prefix} | {value} |")

    walk("", protocol)
    return "\n".join(lines)


def kl_section(kl: Mapping[str, Any] | None, log2_k: float | None, plotted: bool) -> list[str]:
    """The group-KL paragraph (and the histogram when it was plotted)."""
    if not kl:
        return []
    lines = ["## Group KL of the posterior", ""]
    if plotted:
        lines += ["![group KL histogram](kl_histogram.png)", ""]
    against = f" against log2 K = {log2_k:.3f} bits" if log2_k is not None else ""
    lines.append(
        f"Group KL (bits){against}: mean {kl['mean']:.3f}, min {kl['min']:.3f}, max {kl['max']:.3f}; "
        f"per group: {', '.join(f'{v:.2f}' for v in kl['per_group'])}. "
        "The paper's sizing rule is round(log2 K) = round(mean group KL) (docs/method.md section 5)."
    )
    return lines + [""]


def write_report(
    out_dir: str | Path,
    results: Mapping[str, Any],
    *,
    grid_columns: Sequence[Tensor] = (),
    grid_names: Sequence[str] = (),
    kl_histogram: tuple[Sequence[int], Sequence[float]] | None = None,
    usage_counts: Tensor | None = None,
    title: str = "Evaluation report",
) -> Path:
    """Write the report folder and return the path of ``report.md``.

    Args:
        out_dir: created if missing; files in it with the same names are replaced.
        results: the dict :func:`~gaussquant.eval.evaluate.evaluate` returns (JSON-safe).
        grid_columns: image batches ``(B, 3, H, W)`` in [-1, 1], e.g. ``[x, x_continuous, x_quantized]``.
        grid_names: one caption per column.
        kl_histogram: ``(counts, edges)`` of the group KL in bits over the evaluated images (GQ models;
            ``KLAccumulator.report()`` gives them), plotted against log2 K.
        usage_counts: ``(G, K)`` index counts over the whole set (discrete models).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    k = results.get("codebook_size")
    log2_k = math.log2(k) if k else None
    lines = [f"# {title}", ""]
    model = results.get("protocol", {}).get("model")
    if model:
        lines += [f"Model: `{model}`", ""]
    lines += [f"Images evaluated: **{results['num_images']}** (none dropped).", "", "## Metrics", "",
              metrics_table(results), ""]
    if results.get("continuous"):
        lines += ["The gap is quantized minus continuous: what the conversion to tokens costs.", ""]
    if results.get("bits_per_token") is not None:
        lines += ["## Rate and codebook", "", rate_table(results), ""]
    if grid_columns:
        save_image_grid(grid_columns, out / "reconstructions.png", labels=grid_names)
        lines += ["## Reconstructions", "", "Columns: " + " | ".join(grid_names) + ".", "",
                  "![reconstructions](reconstructions.png)", ""]
    plotted = kl_histogram is not None and log2_k is not None
    if plotted:
        plot_kl_histogram(kl_histogram[0], kl_histogram[1], log2_k, out / "kl_histogram.png")
    lines += kl_section(results.get("kl_bits"), log2_k, plotted)
    if usage_counts is not None:
        plot_codebook_usage(usage_counts, out / "codebook_usage.png")
        lines += ["## Codebook usage", "", "Codes sorted by frequency per group over the whole set; "
                  "the dashed line is uniform usage 1/K.", "", "![codebook usage](codebook_usage.png)", ""]
    lines += ["## Protocol", "", protocol_table(results.get("protocol", {})), ""]
    unavailable = results.get("unavailable") or {}
    if unavailable:
        lines += ["## Metrics not computed", ""] + [f"- `{name}`: {why}" for name, why in unavailable.items()] + [""]
    (out / "metrics.json").write_text(json.dumps(results, indent=2, sort_keys=True))
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
