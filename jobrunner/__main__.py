"""``python -m jobrunner``: see :mod:`jobrunner.cli`."""

import sys

from .cli import main

sys.exit(main())
