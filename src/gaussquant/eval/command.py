"""``gaussquant eval MODEL [--data DIR] [--json OUT] [--report DIR]``: parsing only; see ``evaluate.py``.

Multi-process: ``torchrun --nproc_per_node N -m gaussquant eval ...`` shards the files over the ranks and
all-reduces every statistic (the numbers equal a one-process run); rank 0 prints and writes.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="save_pretrained dir, checkpoint step dir or run dir")
    parser.add_argument("--data", default=None,
                        help="image folder (recursive; center crops); default: crops of the bundled held-out photos")
    parser.add_argument("--image-size", type=int, default=None, help="default: the model's training image_size")
    parser.add_argument("--num-crops", type=int, default=256, help="crops of the default photos (without --data)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda")
    parser.add_argument("--ema", action="store_true", help="evaluate the EMA weights of a checkpoint")
    parser.add_argument("--json", default=None, help="write the metrics JSON here")
    parser.add_argument("--report", default=None, help="write a markdown report with figures into this folder")
    parser.add_argument("--num-grid", type=int, default=8, help="images in the report's reconstruction grid")


def summary(results: dict) -> str:
    """A few lines: count, image metrics (quantized and continuous), rate, usage."""
    from gaussquant.eval.report import METRIC_ROWS

    lines = [f"images: {results['num_images']} ({results['protocol']['resolution']}, {results['protocol']['data']})"]
    cont = results.get("continuous") or {}
    for key, label, spec, _ in METRIC_ROWS:
        value = results.get(key)
        text = "n/a" if value is None else spec.format(value)
        if key in cont:
            text += " (continuous " + ("n/a" if cont[key] is None else spec.format(cont[key])) + ")"
        lines.append(f"{label}: {text}")
    for kid in ("kid_inception", "kid_effnet_lite0"):
        if results.get(kid) is not None:
            lines.append(f"{kid}: {results[kid]:.5f} ± {results[kid + '_std']:.5f} "
                         f"(subsets of {results[kid + '_subset_size']} images)")
    if results.get("bits_per_token") is not None:
        r = results
        lines.append(f"bits per token {r['bits_per_token']:.3f}, bpp {r['bpp']:.4f}; {r['num_tokens']} tokens, "
                     f"K = {r['codebook_size']}: codebook usage {r['codebook_usage']:.4f} of K, "
                     f"{r['codebook_usage_vs_reachable']:.4f} of min(tokens, K) = {r['reachable_codes']}")
        lines.append(f"index entropy {r['index_entropy_bits']:.3f} bits (Miller-Madow {r['index_entropy_bits_mm']:.3f}) "
                     f"of log2 K = {r['max_entropy_bits']:.3f}; joint entropy of whole tokens "
                     f"{r['joint_entropy_bits']:.3f} bits (Miller-Madow {r['joint_entropy_mm_bits']:.3f}) per token, "
                     f"rate {r['bits_per_token_rate']:.3f}")
    kl = results.get("kl_bits") or {}
    if kl:
        band = ("n/a (no target)" if kl.get("in_band") is None else
                f"{kl['in_band']:.3f} of group tokens within {kl['target_bits']:g} ± {kl['tolerance_bits']:g}")
        p = kl.get("percentiles") or {}
        lines.append(f"group KL bits: mean {kl['mean']:.3f}, min {kl['min']:.3f}, p1 {p.get('1', float('nan')):.2f}, "
                     f"p50 {p.get('50', float('nan')):.2f}, p99 {p.get('99', float('nan')):.2f}, max {kl['max']:.3f}; "
                     f"in band: {band}")
    for name, why in (results.get("warnings") or {}).items():
        lines.append(f"WARNING {name}: {why}")
    for name, why in (results.get("unavailable") or {}).items():
        lines.append(f"{name} unavailable: {why}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    from gaussquant.distributed import rank_and_world
    from gaussquant.eval.evaluate import evaluate
    from gaussquant.train.distributed import setup

    setup("cpu" if args.device == "cpu" else "auto")  # joins the torchrun process group, if any
    results = evaluate(
        args.model, args.data, image_size=args.image_size, batch_size=args.batch_size,
        num_workers=args.num_workers, device=args.device, use_ema=args.ema, num_crops=args.num_crops,
        json_path=args.json, report_dir=args.report, num_grid=args.num_grid, progress=True,
    )
    if rank_and_world()[0] == 0:
        print(summary(results))
        if args.json is None and args.report is None:
            print(json.dumps(results, indent=2, sort_keys=True))
    return 0
