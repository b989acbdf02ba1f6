"""Theorem check: Monte-Carlo large-error probability vs log K - KL with exact curve and bounds (docs/RESULTS.md)."""
import sys

from gaussquant.cli import main

if __name__ == "__main__":  # the quality benchmark spawns worker processes that re-import this file
    sys.exit(main(["bench", "theory", *sys.argv[1:]]))
