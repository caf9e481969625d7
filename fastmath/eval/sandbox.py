"""Run model-written Python ("program of thought") inside operating-system isolation.

PoT asks the model for a program and grades the last line it prints. Model output is hostile input,
and no check inside the interpreter holds it (a program reached the guard's own globals through
`__import__.__globals__` and switched it off), so every program runs under bubblewrap, in a fresh
interpreter; the in-process guard (import allow-list, audit hook) stays inside as a second layer that
turns most attempts into a readable "forbidden: ...".

Stops: reading or changing host files (the program sees only the interpreter, its stdlib and the
system libraries, read-only, plus an empty private tmpfs as cwd and /tmp, its own /proc, a minimal
/dev; no repo, no $HOME, no /etc), the network (own empty network namespace), the host's processes
(own PID namespace, uid/gid 65534, no capabilities), the evaluator's environment (none passed),
processes outliving the run (killing bwrap's process group ends the PID namespace), and
new processes or threads, ptrace, bpf, io_uring, userfaultfd, perf events, keyrings and more
namespaces (seccomp; root's RLIMIT_NPROC would not bind). Kernel limits bound memory, CPU time,
file size and descriptors; the parent bounds wall time and printed output.

Needs: bubblewrap >= 0.5 (`apt-get install -y bubblewrap`), unprivileged user namespaces, Linux on
x86_64 or aarch64. A real probe run checks this once per process; without it `run_program` refuses
unless the caller passes `allow_unsafe=True` (CLI: `--unsafe-no-os-sandbox`): then the guard alone,
which a hostile program can defeat, holds it, and `result.isolation` says so.

Does not promise: safety from kernel bugs reachable from an unprivileged user namespace, from CPU
side channels, or from load within the limits (each concurrent run may use `memory_mb` and a core
until its timeout). Host-wide facts any process may read (kernel version, CPU, memory totals, the
interpreter's path) stay visible.

Nothing a program does makes these functions raise: a bad program gives `ok=False` and a reason.
Only a sandbox that cannot start raises `FastmathError`.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import math
import os
import re
import selectors
import shutil
import signal
import struct
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass

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
# Imported up front (the guard refuses file access) with what allowed modules import lazily.
_PRELOAD = (*ALLOWED_MODULES, "collections.abc", "_strptime")

# The bubblewrap binary: a name looked up on PATH, or a path. Read at each call, so a deployment (or a
# test) can point it elsewhere; each distinct value is probed once.
BWRAP = "bwrap"
ISOLATION_BWRAP = "bwrap"
ISOLATION_UNSAFE = "in-process (unsafe)"

STDOUT_CAP_BYTES = 10_000
MAX_PROGRAM_CHARS = 100_000
_STDERR_TAIL_BYTES = 4_000
_OPEN_FILES = 8
_SANDBOX_ID = "65534"  # nobody: the program is not root inside its namespace either
_PROBE_TIMEOUT_S = 30.0
_REASON_MARK = "\x1efastmath-sandbox: "
_INSTALL_FIX = "install it: apt-get install -y bubblewrap"
_UPGRADE_FIX = "upgrade it to 0.5 or newer (Debian 12+, Ubuntu 22.04+ ship one): apt-get install -y bubblewrap"
_FILES_FIX = (
    "it sees only its own executable, stdlib and libpython and /usr/lib, /usr/lib64, /lib, /lib64: "
    "use an interpreter that needs nothing else (a pyenv, venv or distribution Python does)"
)
_USERNS_FIX = (
    "enable unprivileged user namespaces: sysctl -w kernel.unprivileged_userns_clone=1 "
    "(on Ubuntu 24.04+: sysctl -w kernel.apparmor_restrict_unprivileged_userns=0)"
)
_UNSAFE_HINT = (
    "; or pass allow_unsafe=True (CLI: --unsafe-no-os-sandbox) to run model code with only the in-process "
    "guard, which a hostile program can defeat"
)

# The child's bootstrap. The parent prepends `CONFIG = {...}`; the program arrives on stdin. It sets its
# own limits before reading the program, so no untrusted code runs without them (and no preexec_fn,
# which can deadlock a parent with threads).
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

source = sys.stdin.buffer.read().decode("utf-8", "replace")
sys.stdin.close()
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


program_builtins = dict(vars(builtins))
if CONFIG["guard"]:  # off only in tests that show bwrap holding a program on its own
    # Functions that act on other processes without raising an audit event, and the means to rebuild them.
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
    program_builtins["__import__"] = guarded_import
    sys.addaudithook(audit)
program_globals = {"__name__": "__main__", "__builtins__": program_builtins}
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

# Seccomp: refuse process creation (RLIMIT_NPROC does not bind when the sandbox's uid maps to root
# outside) and the kernel interfaces behind most namespace privilege escalations. Python never needs
# them. clone3 gets ENOSYS so that libc falls back to clone, which gets EPERM like the rest.
_SECCOMP_ARCH = {"x86_64": (0xC000003E, 1), "aarch64": (0xC00000B7, 2)}  # AUDIT_ARCH_*, column below
_DENIED_SYSCALLS: tuple[tuple[str, int | None, int | None], ...] = (
    ("clone", 56, 220),
    ("fork", 57, None),  # aarch64 has only clone
    ("vfork", 58, None),
    ("ptrace", 101, 117),
    ("process_vm_readv", 310, 270),
    ("process_vm_writev", 311, 271),
    ("unshare", 272, 97),
    ("setns", 308, 268),
    ("bpf", 321, 280),
    ("userfaultfd", 323, 282),
    ("perf_event_open", 298, 241),
    ("io_uring_setup", 425, 425),
    ("io_uring_enter", 426, 426),
    ("io_uring_register", 427, 427),
    ("keyctl", 250, 219),
    ("add_key", 248, 217),
    ("request_key", 249, 218),
)
_CLONE3 = 435  # the same number on both
_X32_SYSCALL_BIT = 0x40000000

# What the parent saw of a run: stdout, the tail of stderr, and the limit it hit (None if none).
_Outcome = tuple[bytes, bytes, str | None]

_FENCE = re.compile(r"```([^\n`]*)\n(.*?)```", re.DOTALL)
_PYTHON_TAGS = frozenset({"", "python", "python3", "py"})

_probe_lock = threading.Lock()
_probed: dict[str, tuple[str, str] | None] = {}  # BWRAP value -> (why bwrap cannot run, the fix), or None


@dataclass(frozen=True)
class SandboxResult:
    """What a sandboxed program printed, why it failed if it did, and which isolation held it."""

    stdout: str
    error: str | None
    ok: bool
    isolation: str

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
    """Extract and run the completion's program: (printed answer or None, result or None if no code).

    The one path from a completion to an answer, for PoT and for anything else that grades programs.
    """
    code = extract_program(completion)
    if code is None:
        return None, None
    result = run_program(code, timeout_s=timeout_s, memory_mb=memory_mb, allow_unsafe=allow_unsafe)
    return result.answer, result


def run_program(
    code: str, *, timeout_s: float = 5.0, memory_mb: int = 256, allow_unsafe: bool = False
) -> SandboxResult:
    """Run untrusted `code` under bubblewrap, or refuse (FastmathError) when bwrap cannot run.

    `allow_unsafe=True` permits falling back to the in-process guard alone when bwrap cannot run; it
    never replaces bwrap when bwrap works. `result.isolation` says which one ran.
    """
    if timeout_s <= 0 or memory_mb < 64:
        raise FastmathError(
            f"sandbox limits timeout_s={timeout_s}, memory_mb={memory_mb} are too small: "
            "use timeout_s > 0 and memory_mb >= 64"
        )
    problem = _bwrap_problem(BWRAP)
    if problem is not None:
        reason, fix = problem
        if not allow_unsafe:
            raise FastmathError(f"model code runs only under bubblewrap, and {reason}: {fix}{_UNSAFE_HINT}")
        warnings.warn(f"sandbox: running model code without OS isolation: {reason}", RuntimeWarning, stacklevel=2)
    isolation = ISOLATION_UNSAFE if problem is not None else ISOLATION_BWRAP
    if len(code) > MAX_PROGRAM_CHARS:
        return SandboxResult(stdout="", error="program too long", ok=False, isolation=isolation)
    return _run(code, timeout_s, memory_mb, None if problem is not None else shutil.which(BWRAP))


def _bwrap_problem(bwrap: str) -> tuple[str, str] | None:
    """(Why bubblewrap cannot isolate programs here, the fix), or None: a real run, once per BWRAP value."""
    with _probe_lock:
        if bwrap not in _probed:
            _probed[bwrap] = _probe(bwrap)
        return _probed[bwrap]


def _probe(bwrap: str) -> tuple[str, str] | None:
    """Run a trivial program exactly as real ones run: bwrap installed, namespaces allowed, binds complete."""
    path = shutil.which(bwrap)
    if path is None:
        return f"bubblewrap ({bwrap}) is not installed", _INSTALL_FIX
    machine = os.uname().machine
    if machine not in _SECCOMP_ARCH:
        return f"its seccomp filter does not support {machine} (only {', '.join(_SECCOMP_ARCH)})", "use one of those"
    try:
        result = _run("print(6 * 7)", _PROBE_TIMEOUT_S, 256, path)
    except FastmathError as exc:
        return f"bubblewrap ({path}) cannot be run ({exc.__cause__})", _INSTALL_FIX
    if result.ok and result.stdout == "42\n":
        return None
    error = result.error or f"printed {result.stdout[:100]!r}"
    if "Unknown option" in error:
        return f"bubblewrap ({path}) is too old ({error})", _UPGRADE_FIX
    if any(word in error.lower() for word in ("namespace", "uid map", "permission", "not permitted")):
        return f"bubblewrap ({path}) cannot create the sandbox's namespaces ({error})", _USERNS_FIX
    return f"Python ({sys.executable}) does not start inside bubblewrap ({error})", _FILES_FIX


def _run(code: str, timeout_s: float, memory_mb: int, bwrap: str | None, guard: bool = True) -> SandboxResult:
    """One run of the child bootstrap: under `bwrap` (a path) or, when None, directly (unsafe).

    `guard=False` leaves out the in-process guard: for tests that show what bwrap holds on its own.
    """
    config = {
        "mark": _REASON_MARK,
        "guard": guard,
        "preload": list(_PRELOAD),
        "memory_bytes": memory_mb * 2**20,
        "cpu_seconds": math.ceil(timeout_s) + 1,
        "open_files": _OPEN_FILES,
    }
    python = os.path.realpath(sys.executable)
    child = [python, "-I", "-S", "-B", "-X", "utf8", "-c", f"CONFIG = {config!r}\n{_CHILD}"]
    deadline = time.monotonic() + timeout_s
    fds: tuple[int, ...]
    with contextlib.ExitStack() as stack:
        if bwrap is None:
            argv, cwd, fds = child, stack.enter_context(tempfile.TemporaryDirectory(prefix="fastmath-sandbox-")), ()
        else:
            seccomp = os.memfd_create("fastmath-seccomp")
            stack.callback(os.close, seccomp)
            os.write(seccomp, _seccomp_filter(os.uname().machine))
            os.lseek(seccomp, 0, os.SEEK_SET)
            argv, cwd, fds = [bwrap, *_bwrap_args(python), "--seccomp", str(seccomp), "--", *child], "/", (seccomp,)
        proc = _start(argv, cwd, fds)
        try:
            stdout, stderr, limit = _supervise(proc, code.encode("utf-8", "replace"), deadline)
        finally:
            _kill_and_reap(proc)
    isolation = ISOLATION_UNSAFE if bwrap is None else ISOLATION_BWRAP
    text = stdout.decode("utf-8", "replace")
    if limit is not None:
        return SandboxResult(stdout=text, error=limit, ok=False, isolation=isolation)
    if proc.returncode == 0:
        return SandboxResult(stdout=text, error=None, ok=True, isolation=isolation)
    # bwrap's init reports a child killed by signal N as exit status 128 + N.
    status = 128 - proc.returncode if bwrap is not None and proc.returncode > 128 else proc.returncode
    return SandboxResult(stdout=text, error=_failure_reason(status, stderr), ok=False, isolation=isolation)


@functools.cache
def _bwrap_args(python: str) -> tuple[str, ...]:
    """bwrap's options for running `python`: namespaces, identity, and a file system of Python alone."""
    args = [
        *("--unshare-all", "--unshare-user"),  # every namespace, the user one even where bwrap is setuid
        *("--uid", _SANDBOX_ID, "--gid", _SANDBOX_ID, "--cap-drop", "ALL"),
        *("--die-with-parent", "--new-session", "--clearenv", "--hostname", "sandbox"),
    ]
    bound: list[str] = []
    for path in ("/usr/lib", "/usr/lib64", "/lib", "/lib64"):  # the dynamic loader and the C library
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
            bound.append(path)
    paths = sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_exec_prefix})
    libpython = os.path.join(sysconfig.get_config_var("LIBDIR") or "", sysconfig.get_config_var("INSTSONAME") or "")
    for path in (python, paths["stdlib"], paths["platstdlib"], libpython):
        if os.path.exists(path) and not any(_inside(path, root) for root in bound):
            args += ["--ro-bind", path, path]
            bound.append(path)
    for path in {paths["purelib"], paths["platlib"]}:  # installed packages stay out (-S keeps them off the path)
        if os.path.isdir(path) and any(_inside(path, root) for root in bound):
            args += ["--tmpfs", path, "--remount-ro", path]
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--chdir", "/tmp"]
    return (*args, "--remount-ro", "/")  # the root tmpfs too: only /tmp and /dev/shm are writable


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


@functools.cache
def _seccomp_filter(machine: str) -> bytes:
    """A classic-BPF seccomp program: other architectures die, denied calls fail, the rest pass."""
    arch, column = _SECCOMP_ARCH[machine]

    def insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
        return struct.pack("=HBBI", code, jt, jf, k)

    load, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_JMP|JGE|K, BPF_RET|K
    allow, kill, fail = 0x7FFF0000, 0x80000000, 0x00050000  # SECCOMP_RET_ALLOW, _KILL_PROCESS, _ERRNO
    program = [insn(load, 4), insn(jeq, arch, 1, 0), insn(ret, kill), insn(load, 0)]  # seccomp_data.arch, .nr
    if machine == "x86_64":  # the x32 ABI's numbers would bypass the list below
        program += [insn(jge, _X32_SYSCALL_BIT, 0, 1), insn(ret, fail | errno.ENOSYS)]
    program += [insn(jeq, _CLONE3, 0, 1), insn(ret, fail | errno.ENOSYS)]
    for row in _DENIED_SYSCALLS:
        number = row[column]
        if isinstance(number, int):  # None: not a system call on this machine
            program += [insn(jeq, number, 0, 1), insn(ret, fail | errno.EPERM)]
    return b"".join([*program, insn(ret, allow)])


def _start(argv: list[str], cwd: str, fds: tuple[int, ...]) -> subprocess.Popen[bytes]:
    """Start the child in its own session, so that killing its process group ends everything it started."""
    try:
        return subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env={},
            close_fds=True,
            pass_fds=fds,
            start_new_session=True,
        )
    except OSError as exc:
        raise FastmathError(f"cannot start the program sandbox ({argv[0]}): {exc}") from exc


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
    """Kill the child's whole process group: bwrap and the PID namespace's init, which takes the namespace
    (every process the program started) with it; in unsafe mode, the child and whatever stayed in its group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def _failure_reason(status: int, stderr: bytes) -> str:
    """The child's own reason line if it wrote one, else what the exit status (and stderr's last line) says."""
    text = stderr.decode("utf-8", "replace")
    if _REASON_MARK in text:
        return text.rsplit(_REASON_MARK, 1)[1].splitlines()[0]
    if status == -signal.SIGXCPU:
        return "timeout"
    if status < 0:
        return f"killed ({signal.strsignal(-status) or f'signal {-status}'})"
    last = next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "")
    return f"exit status {status}" + (f": {last[:300]}" if last else "")
