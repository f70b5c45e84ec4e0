"""``python -m coarse2fine.cli``: the command line (as torchrun launches it)."""

import sys

from coarse2fine.cli import main

sys.exit(main())
