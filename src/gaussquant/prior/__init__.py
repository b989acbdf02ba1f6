"""An autoregressive prior over token grids: what a generator does with a tokenizer's tokens.

- ``model``: :class:`TokenPrior`, a compact causal transformer over ``(B, L, G)`` index grids, and its presets;
- ``data``: tokens files as raster-order sequences, class labels from folder names;
- ``store``: a trained prior's config.json and :func:`load_prior`;
- ``train``: :func:`train_prior` (resumable, atomic checkpoints);
- ``evaluate``: held-out negative log-likelihood in bits per token and per pixel;
- ``generate``: sample token grids and decode them to PNGs with the tokenizer that wrote the training tokens.
"""
