"""GQ conversion gap of demo-sized models on the whole held-out photos (docs/demo_model.md, "Closing the gap").

For each model (a saved-model, run or checkpoint directory; default: the bundled ``unet-demo-gq``) the three
held-out photos, longer side ``--max-side``, are encoded and decoded in the demo's 64-px windows
(``gaussquant.tiling``): the continuous reconstruction (posterior mean) and, for each K, the GQ one
(``to_gaussian_quant(model, K)``, the model's own groups). ``--merged-ks`` adds conversions with all of a
token's channels in one group (d = C) at those K. Printed per model: mean PSNR over the photos, each
conversion's PSNR and its gap to the continuous one, and the group KL on the photos (mean, min, max).

``--decompose`` also says where the gap comes from (:func:`decompose`): the PSNR of decoding a posterior
*sample* (the gap any latent one posterior spread away from the mean costs this decoder), each conversion's
codeword distance from the posterior mean in posterior standard deviations per dimension (a posterior sample
scores 1 on average), and, for the model's own groups, the PSNR when the groups of the KL tail (more than
log2 K + 2 bits) keep their posterior mean, i.e. how much of the gap the tail explains.
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
    parser.add_argument("--decompose", action="store_true", help="also decode posterior samples and print where "
                        "the gap comes from: sample gap, codeword distance, KL-tail share (docs/demo_model.md)")


def measure(model: Any, ks: tuple[int, ...], merged_ks: tuple[int, ...], max_side: int, *,
            decompose_gap: bool = False) -> dict[str, Any]:
    """``{"continuous": dB, "gq": {label: dB}, "kl_bits": (mean, min, max)}`` for one model (eval mode), and
    with ``decompose_gap`` the :func:`decompose` entries as well."""
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
    out = {"continuous": mean_psnr(results), "gq": {label: mean_psnr(results, label) for label in converted},
           "kl_bits": (float(kl.mean()), float(kl.min()), float(kl.max())) if kl.numel() else None}
    if decompose_gap:
        out.update(decompose(model, results, converted))
    return out


def decompose(model: Any, results: list[Any], converted: dict[str, Any], *, draws: int = 2, seed: int = 0,
              tail_margin_bits: float = 2.0, tiling: Any = None) -> dict[str, Any]:
    """Where the conversion gap of :func:`measure`'s photos comes from (means over the photos).

    Returns ``{"sample": dB, "distance": {label: d2}, "tail": {label: (fraction, dB)}}``:

    - ``sample``: PSNR of decoding ``mean + std * eps`` (``draws`` draws per photo, seeded), the cost of a
      latent one posterior spread away from the mean. A GQ codeword is at least that far away, so the GQ
      gap cannot be much smaller than ``continuous - sample`` with this decoder.
    - ``distance``: ``|c - mean|^2 / std^2`` per latent dimension of the chosen codewords (1 = as far as a
      posterior sample on average; the GQ search maximises the posterior density, i.e. minimises this).
    - ``tail``: for the model's own groups, the fraction of group tokens whose KL exceeds log2 K +
      ``tail_margin_bits``, and the PSNR when those groups keep their posterior mean (every other group its
      codeword): the part of the gap the KL tail explains is ``tail dB - GQ dB``.
    """
    import math

    import torch

    from gaussquant.demo.photos import score
    from gaussquant.quantizers.grouping import from_groups, to_groups
    from gaussquant.tiling import Tiling, tiled_decode

    tiling = tiling or Tiling(64, 8)
    generator = torch.Generator().manual_seed(seed)
    own_d = int(model.bottleneck.codebook_dim)
    sample, distance, tail = [], {label: [] for label in converted}, {}
    for r in results:
        mean, logvar = r.moments
        std = (0.5 * logvar).exp()

        def psnr(z: torch.Tensor) -> float:
            return score(r.original, tiled_decode(model, z, tiling.core, tiling.margin)[0]).psnr

        sample.append(sum(psnr(mean + std * torch.randn(mean.shape, generator=generator))
                          for _ in range(draws)) / draws)
        for label, gq in converted.items():
            bq = gq.bottleneck
            codes = bq.dequantize(r.indices[label][None])
            distance[label].append(float((((codes - mean) / std) ** 2).mean()))
            if bq.codebook_dim != own_d or r.kl_bits is None:
                continue
            over = r.kl_bits > math.log2(bq.codebook_size) + tail_margin_bits  # (h, w, G)
            last = lambda t: to_groups(t.permute(0, 2, 3, 1), own_d, bq.grouping)  # noqa: E731  (1, h, w, G, d)
            mixed = from_groups(torch.where(over[None, ..., None], last(mean), last(codes)), bq.grouping)
            tail.setdefault(label, []).append((float(over.float().mean()), psnr(mixed.permute(0, 3, 1, 2))))
    mean_of = lambda values: sum(values) / len(values)  # noqa: E731
    return {"sample": mean_of(sample), "distance": {k: mean_of(v) for k, v in distance.items()},
            "tail": {k: (mean_of([f for f, _ in v]), mean_of([p for _, p in v])) for k, v in tail.items()}}


def main(args: argparse.Namespace) -> int:
    import torch

    from gaussquant.demo.bundled import bundled_dir, load_model_dir

    if args.threads:
        torch.set_num_threads(args.threads)
    for path in args.models or [str(bundled_dir())]:
        model, _ = load_model_dir(path)
        with torch.no_grad():
            m = measure(model, tuple(args.ks), tuple(args.merged_ks), args.max_side, decompose_gap=args.decompose)
        kl = "" if m["kl_bits"] is None else " | group KL on the photos %.2f (%.2f-%.2f) bits" % m["kl_bits"]
        print(f"{path}: continuous {m['continuous']:.2f} dB{kl}")
        if args.decompose:
            print(f"  posterior sample: {m['sample']:.2f} dB, gap {m['sample'] - m['continuous']:+.2f} dB "
                  "(a latent one posterior spread from the mean)")
        for label, value in m["gq"].items():
            extra = ""
            if args.decompose:
                extra = f"; codeword distance {m['distance'][label]:.2f} std^2/dim (sample: 1)"
                if label in m["tail"]:
                    frac, dB = m["tail"][label]
                    extra += f"; KL tail {100 * frac:.1f}% of groups, kept at the mean {dB:.2f} dB"
            print(f"  GQ {label}: {value:.2f} dB, gap {value - m['continuous']:+.2f} dB{extra}")
    return 0
