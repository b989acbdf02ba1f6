"""The model card (``README.md``) that ``save_pretrained`` writes beside config.json and the weights.

Everything in it comes from the config.json dict of the same save: what the model is, its rate in bits per
token and bits per pixel, the GQ codebook spec and fingerprint, the stored metrics (or a note that none are
stored), and how to load it. The front matter (``library_name``, ``tags``) is what the Hugging Face Hub
reads.
"""

from __future__ import annotations

import math
from typing import Any

_ABOUT = {
    "gq": "a VQ-VAE image tokenizer made the Gaussian Quant way (arXiv 2512.06609): a Gaussian VAE trained with "
          "its per-group KL held near log2 K bits, converted without training by searching a fixed random "
          "Gaussian codebook",
    "gaussian": "a continuous Gaussian VAE (the model Gaussian Quant converts into a tokenizer; "
                "`gaussquant convert` makes the discrete model)",
}
_METRICS = ("psnr", "ssim", "ms_ssim", "lpips", "rfid", "codebook_usage", "perplexity")


def render_model_card(meta: dict[str, Any], load_name: str) -> str:
    """Markdown for the config.json dict ``meta``; ``load_name``: the repo id or folder in the example."""
    model, bottleneck = meta["model"], meta["bottleneck"]
    kind = bottleneck["kind"]
    about = _ABOUT.get(kind, f"an image autoencoder with a {kind.upper()} bottleneck (a baseline of the paper)")
    tags = ["gaussquant", "image-tokenizer", "vq-vae" if "bits_per_token" in meta else "vae"]
    lines = [
        "---", "library_name: gaussquant", "tags:", *[f"- {t}" for t in tags], "---", "",
        f"# gaussquant {kind} autoencoder ({model['arch']}, {model['image_size']} px)", "",
        f"This is {about}. Architecture `{model['arch']}`, trained at {model['image_size']}x{model['image_size']} "
        "pixels, images in [-1, 1].", "",
        "## Rate", "", *_rate(meta), "",
    ]
    if "codebook" in meta:
        lines += ["## Codebook", "", *_codebook(meta["codebook"], bottleneck), ""]
    lines += ["## Metrics", "", *_metrics(meta.get("metrics")), ""]
    lines += [
        "## How to load", "", "```python",
        "from gaussquant import Autoencoder", "",
        f'model = Autoencoder.from_pretrained("{load_name}")  # a local folder, or a Hub repo id with the hub extra',
        "x_hat = model.reconstruct(x)  # x: (B, 3, H, W) float images in [-1, 1]",
    ]
    if "bits_per_token" in meta:
        lines += ["tokens = model.tokenize(x)    # int64 indices", "images = model.detokenize(tokens)"]
    lines += ["```", ""]
    digest = (meta.get("weights_sha256") or {}).get("model")
    if digest:
        lines += [f"Weights SHA-256 (checked on load): `{digest}`", ""]
    return "\n".join(lines)


def _rate(meta: dict[str, Any]) -> list[str]:
    if "bits_per_token" not in meta:
        b = meta["bottleneck"]
        target = b.get("target_bits")
        held = f"a KL target of {target:g} bits per group of {b.get('codebook_dim')} channels" if target else \
            f"a fixed KL weight of {b.get('kl_weight')}"
        return [f"Continuous latents ({b.get('latent_channels')} channels) trained with {held}; no tokens."]
    size = int(meta["model"]["image_size"])
    bits, bpp = float(meta["bits_per_token"]), float(meta["bpp"])
    tokens = round(size * size * bpp / bits) if bits else 0
    return ["| bits per token | tokens per image | bits per pixel |", "| --- | --- | --- |",
            f"| {bits:.3f} | {tokens} ({size}x{size} px) | {bpp:.4f} |"]


def _codebook(codebook: dict[str, Any], bottleneck: dict[str, Any]) -> list[str]:
    k, d = int(codebook["codebook_size"]), int(codebook["codebook_dim"])
    method = codebook["method"]
    source = "stored with the weights" if method == "explicit" else \
        f"regenerated from method `{method}`, seed {codebook.get('seed')}"
    return [
        f"K = {k} codewords (log2 K = {math.log2(k):.3f} bits) of dimension d = {d}, {source}; searched with "
        f"rule `{bottleneck.get('rule')}` (beta {bottleneck.get('beta')}), {bottleneck.get('grouping')} grouping.",
        "", f"Codebook fingerprint (SHA-256 of its float32 bytes): `{codebook['fingerprint']}`",
    ]


def _metrics(metrics: Any) -> list[str]:
    if not isinstance(metrics, dict) or not metrics:
        return ["No metrics were stored with this model; measure them with `gaussquant eval MODEL`."]
    rows = [(k, metrics[k]) for k in _METRICS if isinstance(metrics.get(k), (int, float))]
    rows += [(k, v) for k, v in metrics.items()
             if k not in _METRICS and isinstance(v, (int, float)) and not isinstance(v, bool)]
    lines = ["| metric | value |", "| --- | --- |", *[f"| {k} | {v:.4g} |" for k, v in rows]]
    protocol = metrics.get("protocol")
    if isinstance(protocol, dict) and protocol.get("data"):
        lines += ["", f"Measured on {protocol['data']} ({protocol.get('num_images')} images, "
                      f"{protocol.get('resolution')})."]
    return lines
