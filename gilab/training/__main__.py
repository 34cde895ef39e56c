"""``python -m gilab.training`` (what ``torchrun`` launches) is ``gilab train-generator``: the same flags and the
same one-line errors."""

import sys

from ..cli import main

sys.exit(main(["train-generator", *sys.argv[1:]]))
