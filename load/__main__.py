"""``python -m load <scenario> ...``: see load/cli.py and ``python -m load --help``."""

import sys

from load.cli import main

if __name__ == "__main__":
    sys.exit(main())
