"""Run model-written Python ("program of thought") inside operating-system isolation.

PoT asks the model for a program and grades the last line it prints. Model output is hostile input,
and no check inside the interpreter holds it (a program reached the guard's own globals through
`__import__.__globals__` and switched it off), so every program runs under bubblewrap, in a fresh
interpreter; the in-process guard (import allow-list, audit hook) stays inside as a second layer that
turns most attempts into a readable "forbidden: ...".

Stops: reading or changing host files (the program sees only the interpreter, its stdlib and the
system libraries, read-only, an empty read-only /tmp as cwd and a minimal read-only /dev; no /proc,
no repo, no $HOME, no /etc), the network (own empty network namespace; no sockets at all), the host's
processes (own PID namespace, in which the program is init; uid/gid 65534 inside, no capabilities),
the evaluator's environment (none passed), processes outliving the run (the program is the whole
PID namespace, killed with bwrap), host root: started as root, bwrap runs as UNPRIVILEGED_ID, so
that no uid inside maps to host root (paths that uid cannot read are bind-mounted onto a staging
folder first, in a mount namespace of root's own). A seccomp allow-list (`seccomp.py`) admits only
what CPython needs: no new processes or threads, sockets, SysV IPC, ptrace or other processes' memory,
file-system changes or namespaces; a refused call fails with an error naming it. Kernel limits
bound memory, CPU time, file size and descriptors; the parent bounds wall time and printed output,
and strips control characters from what comes back. No cgroup is created or changed (on cgroup v1
hosts the hierarchy is the host's): `result.limits` lists what held a run.

Needs: bubblewrap >= 0.5 (`apt-get install -y bubblewrap`), unprivileged user namespaces, Linux on
x86_64 or aarch64; as root also util-linux (unshare, mount, setpriv) and CAP_SETUID/CAP_SETGID/
CAP_SYS_ADMIN. A real probe run checks this once per process; without it `run_program` refuses
unless the caller passes `allow_unsafe=True` (CLI: `--unsafe-no-os-sandbox`): then the guard alone,
which a hostile program can defeat, holds it, and `result.isolation` says so.

Does not promise: safety from kernel bugs reachable from an unprivileged user namespace or from the
allowed calls, from CPU side channels, or from load within the limits (each concurrent run may use
`memory_mb` and a core until its timeout). Host-wide facts any process may read (kernel version,
CPU, memory totals, the interpreter's path) stay visible.

Nothing a program does makes these functions raise: a bad program gives `ok=False` and a reason.
Only a sandbox that cannot start raises `FastmathError`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from fastmath.errors import FastmathError
from fastmath.eval import seccomp

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
# Started as root, the sandbox runs as this uid/gid outside: it owns nothing and has no account, so
# every uid inside maps to it and nothing of the host's (root's files, /proc/sys) is writable.
UNPRIVILEGED_ID = 2_000_065_534
# Run as root in a private mount namespace: each path bound onto its mount point, then the rest exec'd.
_STAGE_SCRIPT = 'while [ "$1" != -- ]; do mount --bind "$1" "$2" || exit 125; shift 2; done; shift; exec "$@"'
_CONTROL_CHARS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
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
_ROOT_FIX = (
    f"run fastmath as an ordinary user; or, as root, keep util-linux (unshare, mount, setpriv) and the "
    f"CAP_SETUID, CAP_SETGID and CAP_SYS_ADMIN capabilities, so that programs run as uid {UNPRIVILEGED_ID}"
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
    if isinstance(exc, OSError) and exc.errno in range(*CONFIG["refused_errnos"]):
        name = CONFIG["refused_names"].get(exc.errno, "number " + str(exc.errno - CONFIG["refused_errnos"][0]))
        return "system call " + name + " refused (not in the sandbox's seccomp allow-list)"
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
    limits: tuple[str, ...] = ()  # what held the run besides the namespaces: identity, seccomp, limits

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
    if machine not in seccomp.ARCHES:
        return f"its seccomp filter does not support {machine} (only {', '.join(seccomp.ARCHES)})", "use one of those"
    try:
        result = _run("print(6 * 7)", _PROBE_TIMEOUT_S, 256, path)
    except FastmathError as exc:
        if os.geteuid() == 0:  # dropping to UNPRIVILEGED_ID, or a util-linux tool of the staging step, failed
            return f"as root, programs run as uid {UNPRIVILEGED_ID}, which fails ({exc.__cause__ or exc})", _ROOT_FIX
        return f"bubblewrap ({path}) cannot be run ({exc.__cause__})", _INSTALL_FIX
    if result.ok and result.stdout == "42\n":
        return None
    error = result.error or f"printed {result.stdout[:100]!r}"
    if "Unknown option" in error:
        return f"bubblewrap ({path}) is too old ({error})", _UPGRADE_FIX
    if os.geteuid() == 0 and any(f"{tool}: " in error for tool in ("unshare", "mount", "setpriv")):
        return f"as root, programs run as uid {UNPRIVILEGED_ID}, which fails ({error})", _ROOT_FIX
    if any(word in error.lower() for word in ("namespace", "uid map", "permission", "not permitted")):
        return f"bubblewrap ({path}) cannot create the sandbox's namespaces ({error})", _USERNS_FIX
    return f"Python ({sys.executable}) does not start inside bubblewrap ({error})", _FILES_FIX


def _run(code: str, timeout_s: float, memory_mb: int, bwrap: str | None, guard: bool = True) -> SandboxResult:
    """One run of the child bootstrap: under `bwrap` (a path) or, when None, directly (unsafe).

    `guard=False` leaves out the in-process guard: for tests that show what bwrap holds on its own.
    """
    machine = os.uname().machine
    config = {
        "mark": _REASON_MARK,
        "guard": guard,
        "preload": list(_PRELOAD),
        "memory_bytes": memory_mb * 2**20,
        "cpu_seconds": math.ceil(timeout_s) + 1,
        "open_files": _OPEN_FILES,
        "refused_errnos": (seccomp.REFUSED_ERRNO_BASE, seccomp.REFUSED_ERRNO_BASE + seccomp.CALL_LIMIT),
        "refused_names": seccomp.refusal_names(machine) if machine in seccomp.ARCHES else {},
    }
    python = os.path.realpath(sys.executable)
    child = [python, "-I", "-S", "-B", "-X", "utf8", "-c", f"CONFIG = {config!r}\n{_CHILD}"]
    deadline = time.monotonic() + timeout_s
    limits: tuple[str, ...] = (
        f"memory {memory_mb} MiB (RLIMIT_AS)",
        f"CPU {config['cpu_seconds']} s",
        f"wall {timeout_s:g} s",
        f"output {STDOUT_CAP_BYTES} bytes",
        "file size 0 (RLIMIT_FSIZE)",
    )
    with contextlib.ExitStack() as stack:
        if bwrap is None:
            cwd = stack.enter_context(tempfile.TemporaryDirectory(prefix="fastmath-sandbox-"))
            proc = _start(child, cwd, (), None)
        else:
            filter_fd = os.memfd_create("fastmath-seccomp")
            stack.callback(os.close, filter_fd)
            os.write(filter_fd, seccomp.build(machine))
            os.lseek(filter_fd, 0, os.SEEK_SET)
            launch = _launch(python)
            argv = [*launch.prefix, bwrap, *launch.bwrap_args, "--seccomp", str(filter_fd), "--", *child]
            proc = _start(argv, "/", (filter_fd,), launch.user)
            limits = (launch.identity, _SECCOMP_LIMIT, "read-only files, no /proc", *limits, _CGROUP)
        try:
            stdout, stderr, limit = _supervise(proc, code.encode("utf-8", "replace"), deadline)
        finally:
            _kill_and_reap(proc)
    isolation = ISOLATION_UNSAFE if bwrap is None else ISOLATION_BWRAP
    text = _printable(stdout.decode("utf-8", "replace"))
    if limit is None and proc.returncode == 0:
        return SandboxResult(stdout=text, error=None, ok=True, isolation=isolation, limits=limits)
    error = limit or _failure_reason(proc.returncode, stderr, bwrap is not None)
    return SandboxResult(stdout=text, error=_printable(error), ok=False, isolation=isolation, limits=limits)


_SECCOMP_LIMIT = "seccomp allow-list (no new processes, threads, sockets or SysV IPC)"
# No cgroup: on cgroup v1 hosts the hierarchy is the host's, and none is created or changed here.
_CGROUP = "no cgroup (memory and processes are bounded by RLIMIT_AS and seccomp)"


@dataclass(frozen=True)
class _Launch:
    """How bubblewrap is started: a command before it, the user it runs as, its options, and who that is."""

    prefix: tuple[str, ...]
    user: int | None
    bwrap_args: tuple[str, ...]
    identity: str


@functools.cache
def _launch(python: str) -> _Launch:
    """Never as root: root's bwrap maps the sandbox to host uid 0, so root starts it as UNPRIVILEGED_ID.

    Paths that uid cannot read (a pyenv under root's 0700 home) are first bind-mounted, in a private
    mount namespace of root's own (the host's mount table never sees it), onto empty mount points in
    `_stage_dir()`; bwrap then binds them from there.
    """
    binds = _interpreter_paths(python)
    if os.geteuid() != 0:
        return _Launch((), None, _bwrap_args(binds), f"uid {os.geteuid()} outside (the caller's own)")
    identity = f"uid {UNPRIVILEGED_ID} outside (dropped from root)"
    hidden = [path for path, _ in binds if not _readable_by_others(path)]
    if not hidden:
        return _Launch((), UNPRIVILEGED_ID, _bwrap_args(binds), identity)
    stage = _stage_dir()
    staged, mounts = {}, []
    for i, path in enumerate(hidden):
        kind = "d" if os.path.isdir(path) else "f"
        staged[path] = os.path.join(stage, f"{kind}{i}")
        if kind == "d":
            os.makedirs(staged[path], exist_ok=True)
        else:
            Path(staged[path]).touch(0o444)
        mounts += [path, staged[path]]
    prefix = (
        *("unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", _STAGE_SCRIPT, "sh"),
        *(*mounts, "--"),
        *("setpriv", f"--reuid={UNPRIVILEGED_ID}", f"--regid={UNPRIVILEGED_ID}", "--clear-groups", "--"),
    )
    return _Launch(prefix, None, _bwrap_args([(staged.get(src, src), dest) for src, dest in binds]), identity)


def _stage_dir() -> str:
    """Root's folder of empty mount points, the same for every run and process (nothing is left per run):
    the binds onto them exist only in each run's private mount namespace."""
    stage = os.path.join(tempfile.gettempdir(), "fastmath-sandbox-stage")
    with contextlib.suppress(FileExistsError):
        os.mkdir(stage)
        os.chmod(stage, 0o755)
    info = os.lstat(stage)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o022:
        raise FastmathError(f"{stage} is not a folder only root may change: remove it")
    return stage


def _interpreter_paths(python: str) -> list[tuple[str, str]]:
    """(source, destination) of what the child needs: the interpreter, its stdlib and libpython, the C library."""
    binds: list[tuple[str, str]] = []
    for path in ("/usr/lib", "/usr/lib64", "/lib", "/lib64"):  # the dynamic loader and the C library
        if os.path.isdir(path) and not os.path.islink(path):
            binds.append((path, path))
    paths = sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_exec_prefix})
    libpython = os.path.join(sysconfig.get_config_var("LIBDIR") or "", sysconfig.get_config_var("INSTSONAME") or "")
    for path in (python, paths["stdlib"], paths["platstdlib"], libpython):
        if os.path.exists(path) and not any(_inside(path, root) for _, root in binds):
            binds.append((path, path))
    return binds


def _readable_by_others(path: str) -> bool:
    """Whether a uid with no groups can reach and read `path` (every folder above searchable by others)."""
    parts = Path(path).parents
    if not all(os.stat(parent).st_mode & stat.S_IXOTH for parent in parts):
        return False
    mode = os.stat(path).st_mode
    return bool(mode & stat.S_IROTH) and (not stat.S_ISDIR(mode) or bool(mode & stat.S_IXOTH))


def _bwrap_args(binds: list[tuple[str, str]]) -> tuple[str, ...]:
    """bwrap's options: every namespace, the program as its PID namespace's init, a read-only file
    system of Python alone, no /proc (no kernel knobs, no process memory)."""
    args = [
        *("--unshare-all", "--unshare-user"),  # every namespace, the user one even where bwrap is setuid
        *("--uid", _SANDBOX_ID, "--gid", _SANDBOX_ID, "--cap-drop", "ALL"),
        *("--die-with-parent", "--new-session", "--as-pid-1", "--clearenv", "--hostname", "sandbox"),
    ]
    for path in ("/usr/lib", "/usr/lib64", "/lib", "/lib64"):
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
    for source, dest in binds:
        args += ["--ro-bind", source, dest]
    paths = sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_exec_prefix})
    for path in {paths["purelib"], paths["platlib"]}:  # installed packages stay out (-S keeps them off the path)
        if os.path.isdir(path) and any(_inside(path, dest) for _, dest in binds):
            args += ["--tmpfs", path, "--remount-ro", path]
    args += ["--dev", "/dev", "--remount-ro", "/dev", "--dir", "/tmp", "--chdir", "/tmp"]
    return (*args, "--remount-ro", "/")  # the root tmpfs too: nothing is writable, /dev/shm included


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _printable(text: str) -> str:
    """`text` without control characters other than newline and tab (C0, C1, bidi overrides)."""
    return _CONTROL_CHARS.sub("", text)


def _start(argv: list[str], cwd: str, fds: tuple[int, ...], user: int | None) -> subprocess.Popen[bytes]:
    """Start the child in its own session, so that killing its process group ends everything it started;
    as `user` (uid and gid, no supplementary groups) when given."""
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
            user=user,
            group=user,
            extra_groups=None if user is None else [],
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
    """Kill the child's whole process group: bwrap, whose death kills the program (--die-with-parent; it is
    its PID namespace's init, so the namespace goes with it); in unsafe mode, the child and its group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def _failure_reason(status: int, stderr: bytes, under_bwrap: bool) -> str:
    """The child's own reason line if it wrote one, else what the exit status (and stderr's last line) says.

    bwrap reports a program killed by signal N as exit status 128 + N, so above 128 both are named.
    """
    text = stderr.decode("utf-8", "replace")
    if _REASON_MARK in text:
        return text.rsplit(_REASON_MARK, 1)[1].splitlines()[0]
    if status < 0:
        return "timeout" if status == -signal.SIGXCPU else f"killed by {_signal_name(-status)}"
    last = next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "")
    reason = f"exit status {status}"
    if under_bwrap and status - 128 in signal.valid_signals():
        reason += f" (or killed by {_signal_name(status - 128)}: bubblewrap reports both the same way)"
    return reason + (f": {last[:300]}" if last else "")


def _signal_name(number: int) -> str:
    """SIGKILL for 9; 'signal 72' for a number that names no signal."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
