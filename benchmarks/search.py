"""Codebook search benchmark (same as `gaussquant bench search`); see docs/benchmarks.md."""
import sys

from gaussquant.cli import main

sys.exit(main(["bench", "search", *sys.argv[1:]]))
