"""Rate-matched quality of GQ vs VQ, FSQ, LFQ, BSQ, TokenBridge on tiny UNet/ViT (docs/RESULTS.md)."""
import sys

from gaussquant.cli import main

sys.exit(main(["bench", "quality", *sys.argv[1:]]))
