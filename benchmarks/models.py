"""Forward+backward images/s and peak memory of the tiny and small model presets on CPU."""
import sys

from gaussquant.cli import main

if __name__ == "__main__":  # guard: the benchmark spawns worker processes that re-import this file
    sys.exit(main(["bench", "models", *sys.argv[1:]]))
