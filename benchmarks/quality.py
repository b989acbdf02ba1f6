"""Rate-matched quality of GQ vs VQ, FSQ, LFQ, BSQ, TokenBridge on tiny UNet/ViT (docs/RESULTS.md)."""
import sys

from gaussquant.cli import main

if __name__ == "__main__":  # the quality benchmark spawns worker processes that re-import this file
    sys.exit(main(["bench", "quality", *sys.argv[1:]]))
