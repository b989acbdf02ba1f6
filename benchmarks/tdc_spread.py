"""TDC vs vanilla KL weight: spread of group and per-dimension KL (docs/RESULTS.md)."""
import sys

from gaussquant.cli import main

if __name__ == "__main__":  # the quality benchmark spawns worker processes that re-import this file
    sys.exit(main(["bench", "spread", *sys.argv[1:]]))
