"""Tables (mean +- std over seeds, paired GQ-minus-baseline intervals) and rate-distortion plots of
``bench quality`` (matplotlib, Agg)."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

METRICS = (("psnr", "PSNR (dB)", "{:.2f}"), ("ssim", "SSIM", "{:.4f}"), ("fd", "FD EffNet-Lite0 (lower better)", "{:.2f}"),
           ("usage", "codebook usage", "{:.3f}"), ("usage_vs_reachable", "usage of min(tokens, K)", "{:.3f}"),
           ("entropy_frac", "index entropy / log2 K", "{:.3f}"), ("joint_frac", "joint token entropy / rate", "{:.3f}"))
LABELS = {"gq": "GQ (TDC VAE -> GQ)", "vq": "VQ", "fsq": "FSQ", "lfq": "LFQ", "bsq": "BSQ",
          "tokenbridge": "TokenBridge (vanilla VAE)", "tokenbridge_tdc": "TokenBridge (TDC d=1 VAE)"}


def _entropy_frac(row: dict[str, Any]) -> float | None:
    k = row.get("codebook_size")
    if row.get("entropy_bits") is None or not k:
        return None
    return row["entropy_bits"] / math.log2(k)


def _joint_frac(row: dict[str, Any]) -> float | None:
    rate = row.get("bits_per_token")
    if row.get("joint_entropy_bits") is None or not rate:
        return None
    return row["joint_entropy_bits"] / rate


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (arch, rate, method): mean and std over seeds of every metric, plus rate columns."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        row = {**row, "entropy_frac": _entropy_frac(row), "joint_frac": _joint_frac(row)}
        groups.setdefault((row["arch"], row["rate"], row["method"]), []).append(row)
    out = []
    for (arch, rate, method), items in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], _order(kv[0][2]))):
        entry = {"arch": arch, "rate": rate, "method": method, "seeds": len(items),
                 "bits_per_token": items[0]["bits_per_token"], "bpp": items[0]["bpp"],
                 "settings": "; ".join(sorted({str(it["settings"]) for it in items if it.get("settings")}))}
        for key, _, _ in METRICS:
            values = [it[key] for it in items if it.get(key) is not None]
            entry[key] = statistics.fmean(values) if values else None
            entry[key + "_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        out.append(entry)
    return out


def _order(method: str) -> int:
    return list(LABELS).index(method) if method in LABELS else len(LABELS)


def _cell(entry: dict[str, Any], key: str, spec: str) -> str:
    if entry.get(key) is None:
        return "n/a"
    return f"{spec.format(entry[key])} ± {spec.format(entry[key + '_std'])}"


def format_table(rows: list[dict[str, Any]]) -> str:
    """A markdown table: arch, bits/token, bpp, method, its settings, metrics as mean ± std; best per (arch,
    rate) in bold. A metric no row has (FD without ``--fd``) gets no column."""
    agg = aggregate(rows)
    metrics = [m for m in METRICS if any(e.get(m[0]) is not None for e in agg)]
    head = ["arch", "bits/token", "bpp", "method", "settings", "seeds"] + [label for _, label, _ in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    best: dict[tuple, dict[str, float]] = {}
    for e in agg:
        b = best.setdefault((e["arch"], e["rate"]), {})
        for key, better in (("psnr", max), ("ssim", max), ("fd", min)):
            if e.get(key) is not None:
                b[key] = better(b.get(key, e[key]), e[key])
    for e in agg:
        cells = [e["arch"], f"{e['bits_per_token']:.3f}", f"{e['bpp']:.4f}", LABELS.get(e["method"], e["method"]),
                 e["settings"] or "-", str(e["seeds"])]
        for key, _, spec in metrics:
            text = _cell(e, key, spec)
            if e.get(key) is not None and best[(e["arch"], e["rate"])].get(key) == e.get(key):
                text = f"**{text}**"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_paired(paired: list[dict[str, Any]]) -> str:
    """Markdown: per (arch, rate, baseline) GQ minus baseline (mean, t interval, seeds) and the verdict."""
    head = ["arch", "bits/token", "baseline", "seeds", "GQ - baseline PSNR (dB)", "interval", "paired std",
            "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for p in paired:
        interval = ("n/a (1 seed)" if p["low"] is None else
                    f"[{p['low']:+.2f}, {p['high']:+.2f}] ({100 * p['confidence']:.0f}% t)")
        std = "n/a" if p["std"] is None else f"{p['std']:.2f}"
        lines.append(f"| {p['arch']} | {p['rate']} | {LABELS.get(p['baseline'], p['baseline'])} | {p['n']} | "
                     f"{p['mean']:+.2f} | {interval} | {std} | {p['verdict']} |")
    return "\n".join(lines)


def plot_rate_distortion(rows: list[dict[str, Any]], arch: str, path: Path) -> Path:
    """PSNR, SSIM, FD and usage against bpp for one architecture; error bars = std over seeds."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    agg = [e for e in aggregate(rows) if e["arch"] == arch]
    fig = Figure(figsize=(12, 3.4), dpi=100)
    FigureCanvasAgg(fig)
    keys = METRICS[:4]
    for i, (key, label, _) in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), i + 1)
        for method in sorted({e["method"] for e in agg}, key=_order):
            pts = sorted((e["bpp"], e[key], e[key + "_std"]) for e in agg if e["method"] == method and e[key] is not None)
            if pts:
                xs, ys, es = zip(*pts)
                style = dict(lw=2.5, color="black") if method == "gq" else dict(lw=1.2)
                ax.errorbar(xs, ys, yerr=es, marker="o", ms=4, capsize=2, label=LABELS.get(method, method), **style)
        ax.set_xlabel("bits per pixel")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=6, loc="best")
    fig.suptitle(f"tiny {arch}: rate-distortion on held-out photos (mean ± std over seeds)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def write_outputs(summary: dict[str, Any], out: Path) -> None:
    """``results.json`` (rows, paired intervals, config, seconds), ``table.md``, ``paired.md``, ``figures/rd_<arch>.png``."""
    rows = summary["rows"]
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    (out / "table.md").write_text(format_table(rows) + "\n")
    if "paired" in summary:
        (out / "paired.md").write_text(format_paired(summary["paired"]) + "\n")
    for arch in sorted({r["arch"] for r in rows}):
        plot_rate_distortion(rows, arch, out / "figures" / f"rd_{arch}.png")
