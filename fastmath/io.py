"""Files written so that a crash never leaves a half-written result behind."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastmath.errors import FastmathError

# What torch's checkpoint writer says when the disk fills under it (it raises RuntimeError, not OSError).
TORCH_WRITE_FAILED = ("unexpected pos", "PytorchStreamWriter failed", "file write failed")


class DiskFull(FastmathError):
    """A write that found no room: one line naming the folder, the space it needed and what is free."""

    def __init__(self, folder: str | Path, needed: int | None):
        self.folder = Path(folder)
        try:
            free = f"{shutil.disk_usage(self.folder).free / 2**20:.1f} MB free"
        except OSError:
            free = "free space unknown"
        need = f"needs about {needed / 2**20:.1f} MB" if needed else "needs more room"
        super().__init__(
            f"disk full writing into {self.folder}: it {need}, {free}; free some space, or write elsewhere"
        )


def is_disk_full(error: BaseException | None) -> bool:
    """Whether `error` (or what caused it) is a write that ran out of space."""
    while error is not None:
        if isinstance(error, DiskFull):
            return True
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(error, RuntimeError) and any(m in str(error) for m in TORCH_WRITE_FAILED):
            return True
        error = error.__cause__ or error.__context__
    return False


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename it over `path` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise (DiskFull(path.parent, len(text.encode())) if is_disk_full(e) else e) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if is_disk_full(e):
            raise DiskFull(path.parent, len(text.encode())) from None
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def atomic_write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: str | Path) -> Iterator[dict]:
    """Yield the complete JSON lines of `path`; a torn last line (from a killed writer) is skipped."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                if line.endswith("\n"):
                    raise
                return


class JsonlAppender:
    """Append rows to a JSONL file, each flushed and fsynced, so finished work survives a kill.

    Used by resumable jobs: they read back what the file holds and skip it. A torn last line
    left by a kill is cut off before appending, so the file stays valid JSONL.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            data = self.path.read_bytes()
            if data and not data.endswith(b"\n"):
                self.path.write_bytes(data[: data.rfind(b"\n") + 1])
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed by close/__exit__)
        self._full = False  # a write found the disk full: the torn row is cut off on the next open

    def write(self, row: dict) -> None:
        line = json.dumps(row, ensure_ascii=False) + "\n"
        try:
            self._f.write(line)
            self._f.flush()
            os.fsync(self._f.fileno())
        except OSError as e:
            if is_disk_full(e):
                self._full = True
                raise DiskFull(self.path.parent, len(line.encode())) from None
            raise

    def close(self) -> None:
        try:
            self._f.close()
        except OSError:  # flushing the row that did not fit fails again: it was reported already
            if not self._full:
                raise

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def exclusive(path: str | Path, what: str, wait: bool = False) -> Iterator[None]:
    """Hold `<path>.lock` while one process writes `path`; a second writer is refused (or waits, with `wait`).

    An advisory `flock`: the kernel drops it when the holder exits, even on a kill, so a crashed
    writer never leaves a stale lock behind.
    """
    lock_path = Path(f"{path}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise FastmathError(f"{what} is being written by {holder} right now; wait for it to finish") from None
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()}")
        f.flush()
        try:
            yield
        finally:
            f.truncate(0)
            fcntl.flock(f, fcntl.LOCK_UN)
