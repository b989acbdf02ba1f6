"""Training images/s and peak memory of the tiny presets, one process and 2-process gloo (docs/benchmarks.md)."""
import sys

from gaussquant.cli import main

sys.exit(main(["bench", "train", *sys.argv[1:]]))
