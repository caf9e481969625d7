"""`python -m fastmath <command> ...`: see `fastmath.cli`."""

import sys

from fastmath.cli import main

if __name__ == "__main__":
    sys.exit(main())
