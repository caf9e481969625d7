"""Run model-written Python ("program of thought") without trusting it.

The evaluator's program-of-thought strategy asks the model for a Python program and grades the last
line it prints. Model output is untrusted, so the program runs in layers; each layer assumes the one
before it may fail:

1. Import guard (convenience). The program's `__import__` admits only `ALLOWED_MODULES` (math,
   fractions, decimal, statistics, ...), all imported before the program starts, so a legitimate
   import never needs the file system. `import os` ends the run with "forbidden: import os".
2. Audit hook (policy). Objects cannot be hidden in Python: `().__class__.__base__.__subclasses__()`
   reaches `os` in a few steps. So the child installs a `sys.addaudithook` hook, the last thing it
   does before running the program (the interpreter's own start-up needs `open`). The hook is an
   allow-list: only `exec`, `compile`, `builtins.id` and imports of allowed modules pass; any other
   event (`open`, `socket.*`, `os.system`, `subprocess.Popen`, `os.fork`, `os.exec*`, `os.remove`,
   `os.rename`, `os.chdir`, `os.listdir`, `ctypes.*`, `resource.setrlimit`, frame and code access via
   `object.__getattr__`, ...) ends the process at once with "forbidden: <event>". Ending it (rather
   than raising) means the program cannot catch the refusal and carry on. Audit hooks cannot be removed
   once added. The few functions that reach other processes without an audit event (pidfd signals,
   renice, CPU pinning) are deleted before the hook, with `_imp.create_builtin`, which would rebuild
   them.
3. Operating-system enforcement, for when the policy is escaped (say through an interpreter bug):
   a separate interpreter (`-I -S -B`: no site-packages, no environment variables, no cwd on the
   path) with an empty environment, an empty temporary cwd that is removed afterwards, its own session
   so the whole process group is killed at the end, and kernel limits: `RLIMIT_AS` (memory),
   `RLIMIT_CPU`, `RLIMIT_NPROC`=0 (no fork, no threads), `RLIMIT_FSIZE`=0 (no file writes),
   `RLIMIT_NOFILE` (few descriptors), `RLIMIT_CORE`=0. When the evaluator runs as root the child runs
   as `nobody` where `nobody` can run the interpreter, so file permissions apply and `RLIMIT_NPROC`
   binds (root ignores it); otherwise a warning says so. The parent enforces a wall-clock timeout and
   a cap on printed output.

The limits are set by the child on itself before it installs the hook, not in `preexec_fn`:
`preexec_fn` can deadlock in a parent that has threads (torch and tokenizers start them), and the
child receives the program only afterwards, so no untrusted code runs without them.

Not covered by the operating-system layer: there is no network namespace, so network access is
refused by the policy alone; files the child's user may read, and (when the child runs as the
evaluator's own user, as when it is not root) the evaluator's processes, are protected by the policy
alone. For hard isolation run the evaluation in a container without network.

Nothing the program does makes these functions raise: a bad program gives `ok=False` and a reason.
Only a sandbox that cannot start at all raises `FastmathError`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Any

from fastmath.errors import FastmathError

ALLOWED_MODULES = (
    "math",
    "cmath",
    "fractions",
    "decimal",
    "statistics",
    "itertools",
    "functools",
    "collections",
    "re",
    "datetime",
    "random",
    "string",
    "operator",
    "heapq",
    "bisect",
    "numbers",
    "typing",
    "copy",
)
# Imported up front (the program cannot read module files) with what allowed modules import lazily.
_PRELOAD = (*ALLOWED_MODULES, "collections.abc", "_strptime")

STDOUT_CAP_BYTES = 10_000
MAX_PROGRAM_CHARS = 100_000
_STDERR_TAIL_BYTES = 4_000
_OPEN_FILES = 8
_NOBODY = 65534
_REASON_MARK = "\x1efastmath-sandbox: "

# The child's bootstrap. The parent prepends `CONFIG = {...}`; the program arrives on stdin.
_CHILD = r"""
import builtins
import os
import resource
import sys
import warnings

MARK = CONFIG["mark"]


def report(status, reason):
    try:
        sys.stdout.flush()
    except BaseException:
        pass
    os.write(2, ("\n" + MARK + reason[:300] + "\n").encode("utf-8", "replace"))
    os._exit(status)


def describe(exc):
    if isinstance(exc, MemoryError):
        return "memory limit"
    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg} (line {exc.lineno})"
    try:
        text = str(exc).strip().splitlines()
    except BaseException:
        text = []
    return type(exc).__name__ + (": " + text[-1] if text else "")


source = sys.stdin.buffer.read().decode("utf-8", "replace")
sys.stdin.close()
for name in CONFIG["preload"]:
    __import__(name)
warnings.simplefilter("ignore")

memory, cpu = CONFIG["memory_bytes"], CONFIG["cpu_seconds"]
for res, soft, hard in (
    (resource.RLIMIT_AS, memory, memory),
    (resource.RLIMIT_CPU, cpu, cpu + 1),
    (resource.RLIMIT_NPROC, 0, 0),
    (resource.RLIMIT_FSIZE, 0, 0),
    (resource.RLIMIT_NOFILE, CONFIG["open_files"], CONFIG["open_files"]),
    (resource.RLIMIT_CORE, 0, 0),
):
    resource.setrlimit(res, (soft, hard))

try:
    program = compile(source, "<program>", "exec")
except BaseException as exc:
    report(1, describe(exc))
del source

# The preloaded modules' top-level names: C code such as datetime.strptime imports `_strptime` through
# the program's __import__.
allowed = frozenset(name.partition(".")[0] for name in CONFIG["preload"])
real_import = builtins.__import__
ALLOWED_EVENTS = frozenset({"exec", "compile", "builtins.id"})


def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
    if level or name.partition(".")[0] not in allowed:
        report(2, "forbidden: import " + name)
    return real_import(name, globals, locals, fromlist, level)


def audit(event, args):
    if event in ALLOWED_EVENTS:
        return
    if event == "import":
        if str(args[0]).partition(".")[0] in allowed:
            return
        report(2, "forbidden: import " + str(args[0]))
    report(2, "forbidden: " + event)


# Functions that act on other processes without raising an audit event (a program running as the
# evaluator's own user could signal, renice or pin it), and the means to rebuild them from scratch.
OTHER_PROCESSES = ("pidfd_open", "setpriority", "sched_setaffinity", "sched_setparam", "sched_setscheduler")
for module, names in (
    (os, OTHER_PROCESSES),
    (sys.modules["posix"], OTHER_PROCESSES),
    (sys.modules["_signal"], ("pidfd_send_signal",)),
    (sys.modules["_imp"], ("create_builtin", "create_dynamic")),
):
    for name in names:
        if hasattr(module, name):
            delattr(module, name)

program_builtins = dict(vars(builtins))
program_builtins["__import__"] = guarded_import
program_globals = {"__name__": "__main__", "__builtins__": program_builtins}
sys.addaudithook(audit)
try:
    exec(program, program_globals)
except SystemExit as exc:
    if exc.code not in (None, 0):
        program_globals.clear()
        report(1, f"SystemExit: {exc.code}")
except BaseException as exc:
    program_globals.clear()
    report(1, describe(exc))
try:
    sys.stdout.flush()
except BaseException as exc:
    report(1, describe(exc))
os._exit(0)
"""

# What the parent saw of a run: stdout, the tail of stderr, and the limit it hit (None if none).
_Outcome = tuple[bytes, bytes, str | None]

_FENCE = re.compile(r"```([^\n`]*)\n(.*?)```", re.DOTALL)
_PYTHON_TAGS = frozenset({"", "python", "python3", "py"})


@dataclass(frozen=True)
class SandboxResult:
    """What a sandboxed program printed and why it failed, if it did."""

    stdout: str
    error: str | None
    ok: bool
    isolation: str = "in-process"

    @property
    def answer(self) -> str | None:
        """The last non-empty printed line; None when the run failed, so a failed run grades wrong."""
        if not self.ok:
            return None
        lines = [line.strip() for line in self.stdout.splitlines() if line.strip()]
        return lines[-1] if lines else None


def extract_program(completion: str) -> str | None:
    """The code of the last closed ```python (or untagged) fence: the model's final program."""
    blocks = [code for tag, code in _FENCE.findall(completion) if tag.strip().lower() in _PYTHON_TAGS]
    if not blocks or not blocks[-1].strip():
        return None
    return blocks[-1].rstrip() + "\n"


def program_answer(
    completion: str, *, timeout_s: float = 5.0, memory_mb: int = 256, allow_unsafe: bool = False
) -> tuple[str | None, SandboxResult | None]:
    """Extract and run the completion's program: (printed answer or None, result or None if no code)."""
    code = extract_program(completion)
    if code is None:
        return None, None
    result = run_program(code, timeout_s=timeout_s, memory_mb=memory_mb)
    return result.answer, result


def run_program(code: str, timeout_s: float = 5.0, memory_mb: int = 256) -> SandboxResult:
    """Run untrusted `code` in a fresh, limited interpreter; see the module docstring for the layers."""
    if timeout_s <= 0 or memory_mb < 64:
        raise FastmathError(
            f"sandbox limits timeout_s={timeout_s}, memory_mb={memory_mb} are too small: "
            "use timeout_s > 0 and memory_mb >= 64"
        )
    if len(code) > MAX_PROGRAM_CHARS:
        return SandboxResult(stdout="", error="program too long", ok=False)
    config = {
        "mark": _REASON_MARK,
        "preload": list(_PRELOAD),
        "memory_bytes": memory_mb * 2**20,
        "cpu_seconds": math.ceil(timeout_s) + 1,
        "open_files": _OPEN_FILES,
    }
    argv = [sys.executable, "-I", "-S", "-B", "-X", "utf8", "-c", f"CONFIG = {config!r}\n{_CHILD}"]
    deadline = time.monotonic() + timeout_s
    with tempfile.TemporaryDirectory(prefix="fastmath-sandbox-") as cwd:
        proc = _start(argv, cwd)
        try:
            stdout, stderr, limit = _supervise(proc, code.encode("utf-8", "replace"), deadline)
        finally:
            _kill_and_reap(proc)
    text = stdout.decode("utf-8", "replace")
    if limit is not None:
        return SandboxResult(stdout=text, error=limit, ok=False)
    if proc.returncode == 0:
        return SandboxResult(stdout=text, error=None, ok=True)
    return SandboxResult(stdout=text, error=_failure_reason(proc.returncode, stderr), ok=False)


def _start(argv: list[str], cwd: str) -> subprocess.Popen[bytes]:
    """Start the child in its own session (so its whole group can be killed), as `nobody` if possible."""
    try:
        return subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env={},
            close_fds=True,
            start_new_session=True,
            **_privilege_drop(),
        )
    except OSError as exc:
        raise FastmathError(f"cannot start the program sandbox ({sys.executable}): {exc}") from exc


@functools.cache
def _privilege_drop() -> dict[str, Any]:
    """Popen arguments that run the child as `nobody` when we are root, if `nobody` can run Python.

    Often it cannot: an interpreter under /root (pyenv, conda) is not reachable by other users. The
    probe finds out once per process; without the drop, the other layers still apply.
    """
    if os.geteuid() != 0:
        return {}
    drop: dict[str, Any] = {"user": _NOBODY, "group": _NOBODY, "extra_groups": []}
    probe = [sys.executable, "-I", "-S", "-B", "-c", "import " + ", ".join(_PRELOAD)]
    try:
        if subprocess.run(probe, cwd="/", env={}, capture_output=True, timeout=60, **drop).returncode == 0:
            return drop
    except (OSError, subprocess.SubprocessError):
        pass
    warnings.warn(
        f"sandbox: user nobody cannot run {sys.executable}, so sandboxed programs run as root, "
        "held by the audit hook and resource limits only",
        RuntimeWarning,
        stacklevel=4,  # the caller of run_program
    )
    return {}


def _supervise(proc: subprocess.Popen[bytes], code: bytes, deadline: float) -> _Outcome:
    """Send the program and collect capped output until the child exits or the deadline passes.

    Returns (stdout, stderr tail, the limit hit or None). Every step waits at most until the
    deadline, sending the program included.
    """
    assert proc.stdin and proc.stdout and proc.stderr
    pending = memoryview(code)
    stdout, stderr = bytearray(), bytearray()
    with selectors.DefaultSelector() as sel:
        os.set_blocking(proc.stdin.fileno(), False)
        sel.register(proc.stdin, selectors.EVENT_WRITE)
        sel.register(proc.stdout, selectors.EVENT_READ)
        sel.register(proc.stderr, selectors.EVENT_READ)
        while sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return bytes(stdout), bytes(stderr), "timeout"
            for key, _ in sel.select(remaining):
                if key.fileobj is proc.stdin:
                    try:
                        pending = pending[os.write(key.fd, pending[:65536]) :]
                    except BrokenPipeError:  # the child died before reading; its exit status says why
                        pending = pending[:0]
                    if not pending:
                        sel.unregister(proc.stdin)
                        proc.stdin.close()
                    continue
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                elif key.fileobj is proc.stdout:
                    stdout += chunk
                    if len(stdout) > STDOUT_CAP_BYTES:
                        return bytes(stdout[:STDOUT_CAP_BYTES]), bytes(stderr), "output limit"
                else:
                    stderr = (stderr + chunk)[-_STDERR_TAIL_BYTES:]
    # Both pipes closed: the child is exiting. Wait for it without reaping, so that its process-group
    # id stays reserved until _kill_and_reap has signalled the group.
    while os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        if time.monotonic() >= deadline:
            return bytes(stdout), bytes(stderr), "timeout"
        time.sleep(0.005)
    return bytes(stdout), bytes(stderr), None


def _kill_and_reap(proc: subprocess.Popen[bytes]) -> None:
    """Kill the child's whole process group (the child cannot leave it: it leads its session)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def _failure_reason(returncode: int, stderr: bytes) -> str:
    """The child's own reason line if it wrote one, else what the exit status says."""
    text = stderr.decode("utf-8", "replace")
    if _REASON_MARK in text:
        return text.rsplit(_REASON_MARK, 1)[1].splitlines()[0]
    if returncode == -signal.SIGXCPU:
        return "timeout"
    if returncode < 0:
        return f"killed ({signal.strsignal(-returncode) or f'signal {-returncode}'})"
    return f"exit status {returncode}"
