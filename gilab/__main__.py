"""``python -m gilab`` is the ``gilab`` command."""

import sys

from .cli import main

sys.exit(main())
