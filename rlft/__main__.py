"""`python -m rlft`: the same as the `rlft` console script."""

import sys

from rlft.cli import main

sys.exit(main())
