"""``python -m gaussquant`` (and ``torchrun -m gaussquant``) runs the command line."""

import sys

from gaussquant.cli import main

sys.exit(main())
