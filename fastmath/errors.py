"""One exception type for problems the user can fix: the CLI prints its message, not a traceback."""


class FastmathError(Exception):
    """A user-facing error: the message names the bad thing and the fix."""
