"""TDC vs vanilla KL weight: spread of group and per-dimension KL (docs/RESULTS.md)."""
import sys

from gaussquant.cli import main

sys.exit(main(["bench", "spread", *sys.argv[1:]]))
