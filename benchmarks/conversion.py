"""Conversion claims on one TDC VAE: codebook size sweep, seeds, Sobol vs normal, search rule, gap (docs/RESULTS.md)."""
import sys

from gaussquant.cli import main

if __name__ == "__main__":  # the quality benchmark spawns worker processes that re-import this file
    sys.exit(main(["bench", "conversion", *sys.argv[1:]]))
