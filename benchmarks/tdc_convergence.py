"""TDC convergence: reference vs adaptive controller on the tiny presets (docs/RESULTS.md)."""
import sys

from gaussquant.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "tdc-convergence", *sys.argv[1:]]))
