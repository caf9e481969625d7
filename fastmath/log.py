"""One logger for the whole package, quiet on every process but the first under DDP.

Messages are what a user reads (progress, a finished run, a result table): `log.info` goes to
stdout as plain text, `log.warning` and Python `warnings` to stderr as `warning: ...`. Under
`accelerate launch` every process runs the same code; only rank 0 speaks, so a 2-GPU run does not
print everything twice.
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger("fastmath")


def rank() -> int:
    """This process's global rank under torchrun/accelerate (0 when not distributed)."""
    return int(os.environ.get("RANK", "0"))


class _RankZero(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return rank() == 0


class _Console(logging.StreamHandler):
    """A handler that writes to the current `sys.stdout`/`sys.stderr` (pytest and Streamlit swap them)."""

    def __init__(self, name: str):
        self._stream_name = name
        super().__init__()

    @property  # type: ignore[override]
    def stream(self):
        return getattr(sys, self._stream_name)

    @stream.setter
    def stream(self, value) -> None:
        pass


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.name == "py.warnings":  # "file:line: Category: message" -> "message"
            text = text.strip().splitlines()[0].split(": ", 2)[-1] if ": " in text else text.strip()
        return f"warning: {text}" if record.levelno >= logging.WARNING else text


def setup() -> None:
    """Plain messages to stdout, warnings to stderr, rank 0 only; idempotent (tests call it per command)."""
    if getattr(log, "_fastmath_ready", False):
        return
    out = _Console("stdout")
    out.addFilter(lambda r: r.levelno < logging.WARNING)
    err = _Console("stderr")
    err.setLevel(logging.WARNING)
    for handler in (out, err):
        handler.setFormatter(_Format())
        handler.addFilter(_RankZero())
    for logger in (log, logging.getLogger("py.warnings")):
        logger.handlers = [out, err]
        logger.setLevel(logging.INFO)
        logger.propagate = False  # a library that configured the root logger (Unsloth does) would print it twice
    logging.captureWarnings(True)
    log._fastmath_ready = True  # type: ignore[attr-defined]
