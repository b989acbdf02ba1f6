"""Conversion claims on one TDC VAE: codebook size sweep, seeds, Sobol vs normal, search rule, gap (docs/RESULTS.md)."""
import sys

from gaussquant.cli import main

sys.exit(main(["bench", "conversion", *sys.argv[1:]]))
