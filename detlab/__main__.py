"""``python -m detlab`` = the ``detlab`` command."""

import sys

from .cli import main

sys.exit(main())
