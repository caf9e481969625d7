"""`python -m fastmath <command> ...`: see `fastmath.cli`."""

import signal
import sys

from fastmath.cli import main

if __name__ == "__main__":
    # The app's Stop is Ctrl-C (SIGINT). A process started by one that ignores SIGINT (a background job
    # of a shell script, a pytest-xdist worker) inherits SIG_IGN across exec, and Python then installs no
    # KeyboardInterrupt: the run would train on until SIGTERM. Take Python's own handler back.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
