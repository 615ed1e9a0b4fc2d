"""``python -m nanodlm.bench SUBCOMMAND ...``: the same as ``nanodlm bench``."""

import sys

from . import main

sys.exit(main(sys.argv[1:]))
