"""``gaussquant demo``: the main job in minutes, on the photos bundled with the installed wheels.

1. Load the bundled tokenizer (``pretrained_models/unet-demo-gq``: a tiny UNet Gaussian VAE trained with
   TDC at 8 bits per group; docs/demo_model.md) and convert it to GQ, with no training, at three codebook
   sizes around its KL (K = 128, 256, 512: 0.875, 1 and 1.125 bpp).
2. Tokenize the three held-out photos whole (longer side at most 512 px), write one token file per photo,
   decode from the files; compare with the continuous (posterior-mean) reconstruction.
3. Generation: tokenize crops of the training photos, train the ``tiny`` token prior on them for a fixed
   share of the budget (25 s by default), score held-out crops' tokens and decode a few samples.
4. Train a fresh model with the same recipe for the rest of the wall-clock budget, showing TDC move the
   per-group KL onto log2 K; compare it with the bundled model.
5. Write ``OUT/report.md`` (labelled photo grid, rate-quality curve, KL histograms, generated samples,
   warnings, protocol) and ``OUT/metrics.json`` (``psnr``: GQ from the token files; ``continuous.psnr``;
   ``prior``: the prior's numbers), print a summary.

Modules: ``bundled`` (loading the packaged model), ``photos`` (whole-photo evaluation and token files),
``generation`` (the prior and its samples), ``live`` (the live run), ``figures``, ``report``, ``run`` (the
pipeline), ``command`` (CLI).
"""

from gaussquant.demo.command import add_arguments, main

__all__ = ["add_arguments", "main"]
