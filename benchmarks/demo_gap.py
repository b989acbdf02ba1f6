"""GQ conversion gap of demo-sized models on the whole held-out photos (docs/demo_model.md)."""
import sys

from gaussquant.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "demo-gap", *sys.argv[1:]]))
