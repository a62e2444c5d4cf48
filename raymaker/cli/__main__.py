"""``python -m raymaker.cli``: the same as the ``raymaker`` script."""

import sys

from raymaker.cli import main

sys.exit(main())
