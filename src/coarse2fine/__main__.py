"""``python -m coarse2fine``: the command line, as the ``coarse2fine`` script runs it."""

import sys

from coarse2fine.cli import main

sys.exit(main())
