"""GQ conversion gap of demo-sized models on the whole held-out photos (docs/demo_model.md, "Closing the gap").

For each model (a saved-model, run or checkpoint directory; default: the bundled ``unet-demo-gq``) the three
held-out photos, longer side ``--max-side``, are encoded and decoded in the demo's 64-px windows
(``gaussquant.tiling``): the continuous reconstruction (posterior mean) and, for each K, the GQ one
(``to_gaussian_quant(model, K)``, the model's own groups). ``--merged-ks`` adds conversions with all of a
token's channels in one group (d = C) at those K. Printed per model: mean PSNR over the photos, each
conversion's PSNR and its gap to the continuous one, and the group KL on the photos (mean, min, max).
"""

from __future__ import annotations

import argparse
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    ints = lambda s: tuple(int(v) for v in s.split(",") if v)  # noqa: E731
    parser.add_argument("models", nargs="*", metavar="MODEL",
                        help="saved-model, run or checkpoint directories (default: the bundled unet-demo-gq)")
    parser.add_argument("--ks", type=ints, default=(128, 256, 512), help="codebook sizes per group (128,256,512)")
    parser.add_argument("--merged-ks", type=ints, default=(), help="codebook sizes with one group of d = C per "
                        "token, e.g. 32768,65536,131072 (default: none)")
    parser.add_argument("--max-side", type=int, default=512, help="longer side of the photos in pixels (512)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")


def measure(model: Any, ks: tuple[int, ...], merged_ks: tuple[int, ...], max_side: int) -> dict[str, Any]:
    """``{"continuous": dB, "gq": {label: dB}, "kl_bits": (mean, min, max)}`` for one model (eval mode)."""
    import torch

    from gaussquant.convert import to_gaussian_quant
    from gaussquant.data.default_photos import whole_held_out_photos
    from gaussquant.demo.photos import evaluate_photos, mean_psnr

    photos = whole_held_out_photos(max_side, int(model.downsample_factor))
    channels = int(model.bottleneck.latent_channels)
    converted = {f"K={k}, d={model.bottleneck.codebook_dim}": to_gaussian_quant(model, k) for k in ks}
    converted.update({f"K={k}, d={channels}": to_gaussian_quant(model, k, channels) for k in merged_ks})
    results = evaluate_photos(model, photos, converted)
    kl = torch.cat([r.kl_bits.flatten() for r in results if r.kl_bits is not None])
    return {"continuous": mean_psnr(results), "gq": {label: mean_psnr(results, label) for label in converted},
            "kl_bits": (float(kl.mean()), float(kl.min()), float(kl.max())) if kl.numel() else None}


def main(args: argparse.Namespace) -> int:
    import torch

    from gaussquant.demo.bundled import bundled_dir, load_model_dir

    if args.threads:
        torch.set_num_threads(args.threads)
    for path in args.models or [str(bundled_dir())]:
        model, _ = load_model_dir(path)
        with torch.no_grad():
            m = measure(model, tuple(args.ks), tuple(args.merged_ks), args.max_side)
        kl = "" if m["kl_bits"] is None else " | group KL on the photos %.2f (%.2f-%.2f) bits" % m["kl_bits"]
        print(f"{path}: continuous {m['continuous']:.2f} dB{kl}")
        for label, value in m["gq"].items():
            print(f"  GQ {label}: {value:.2f} dB, gap {value - m['continuous']:+.2f} dB")
    return 0
