"""The sandbox holds whoever runs fastmath: as root (as in containers and CI) and as an ordinary user.

Each case of issue 18 runs in a real runner process, once as root and once as an ordinary user
(uid 4242, no account, no groups, started with setpriv), with the in-process guard off, so that only
the operating-system layer stands in the way. Everything is checked from outside: the host's kernel
settings, the uids of every sandbox process in the host's process table while they run, and the
result each run hands back.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fastmath.eval import sandbox, seccomp

REPO = Path(__file__).resolve().parents[2]
ORDINARY_UID = 4242
KNOBS = ("kernel/core_pattern", "vm/drop_caches", "kernel/panic", "kernel/poweroff_cmd", "kernel/hostname")
CTYPES = "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
SELF_SIGNALS = ("SIGSTOP", "SIGTSTP", "SIGTTIN", "SIGTERM", "SIGKILL", "SIGSEGV", "SIGUSR1", "SIGXCPU")
# Runs each (id, code) with the guard off, four at a time, and prints {id: result} as JSON.
RUNNER = """
import json, shutil, sys, time
from concurrent.futures import ThreadPoolExecutor
from fastmath.eval import sandbox

def run(case):
    start = time.monotonic()
    r = sandbox._run(case[1], 10.0, 256, shutil.which(sandbox.BWRAP), guard=False)
    return case[0], {"ok": r.ok, "error": r.error, "stdout": r.stdout, "limits": r.limits,
                     "seconds": time.monotonic() - start}

cases = json.load(sys.stdin)
assert sandbox._bwrap_problem(sandbox.BWRAP) is None, sandbox._bwrap_problem(sandbox.BWRAP)
with ThreadPoolExecutor(4) as pool:
    print(json.dumps(dict(pool.map(run, cases))))
"""


def cases() -> list[tuple[str, str]]:
    """(id, program) for every item of the issue."""
    listed = [
        (
            "kernel_settings",
            f"for knob in {KNOBS!r}:\n"
            "    try:\n        open('/proc/sys/' + knob, 'w').write('|/bin/sh -c id')\n"
            "    except OSError as e:\n        print(type(e).__name__)\n",
        ),
        (
            "process_memory",
            "for path in ('/proc/1/mem', '/proc/self/mem', '/proc/2/mem'):\n"
            "    try:\n        open(path, 'r+b')\n    except OSError as e:\n        print(type(e).__name__)\n"
            + CTYPES
            + "iov = (ctypes.c_char * 8)()\n"
            "print(libc.process_vm_writev(1, ctypes.byref(iov), 1, ctypes.byref(iov), 1, 0), ctypes.get_errno())\n"
            f"print(libc.syscall({_nr('pidfd_getfd')}, 0, 0, 0), ctypes.get_errno())\n"
            f"print(libc.syscall({_nr('kcmp')}, 1, 1, 0, 0, 0), ctypes.get_errno())",
        ),
        (
            "sysv_memory",  # 4 GiB of SysV shared memory, far past the 256 MiB RLIMIT_AS
            CTYPES + "for _ in range(4):\n    print(libc.shmget(0, 1 << 30, 0o1600), ctypes.get_errno())",
        ),
        (
            "sockets",  # AF_VSOCK, AF_NETLINK, AF_UNIX, AF_INET
            "import socket\nfor family in (40, 16, 1, 2):\n"
            "    try:\n        socket.socket(family, socket.SOCK_DGRAM if family == 16 else socket.SOCK_STREAM)\n"
            "    except OSError as e:\n        print(family, e.errno)",
        ),
        *[
            (
                f"fill_{where}_{what}",
                "import os\nfor i in range(100000):\n"
                + (f"    open('{where}/f%d' % i, 'wb').write(b'x' * 4096)" if what == "bytes" else "")
                + (f"    open('{where}/e%d' % i, 'wb').close()" if what == "inodes" else "")
                + (f"    os.symlink('x' * 4000, '{where}/l%d' % i)" if what == "symlinks" else ""),
            )
            for where in ("/tmp", "/dev/shm")
            for what in ("bytes", "inodes", "symlinks")
        ],
        ("sleeper", "import time\ntime.sleep(1.5)\nprint('slept')"),  # in the process table long enough to look
        ("abort", "import os\nos.abort()"),
        ("segfault", CTYPES + "ctypes.string_at(0)"),
        *[
            (f"signal_{name}", f"import os, signal\nos.kill(os.getpid(), signal.{name})\nprint('still running')")
            for name in SELF_SIGNALS
        ],
        (
            "refused_call",
            CTYPES + f"libc.syscall({_nr('mount')}, 0, 0, 0, 0, 0)\nraise OSError(ctypes.get_errno(), 'x')",
        ),
    ]
    return listed + [(f"exit_{status}", f"import os\nos._exit({status})") for status in range(256)]


def _nr(name: str) -> int:
    return seccomp.call_numbers(seccomp.NAMED_REFUSALS, os.uname().machine)[name]


def _refused(name: str) -> int:
    return seccomp.REFUSED_ERRNO_BASE + _nr(name)


@dataclass
class Batch:
    """What one runner process handed back, and the uids of every sandbox process seen while it ran."""

    user: str
    results: dict[str, dict]
    uids: dict[int, list[int]] = field(default_factory=dict)
    knobs_before: dict[str, str] = field(default_factory=dict)
    knobs_after: dict[str, str] = field(default_factory=dict)


def _knobs() -> dict[str, str]:
    readable = {}
    for knob in KNOBS:
        with contextlib.suppress(OSError):  # write-only (drop_caches)
            readable[knob] = Path("/proc/sys", knob).read_text()
    return readable


def _sandbox_uids(root: int, python: str, seen: dict[int, list[int]]) -> None:
    """Record the Uid line of every bwrap and sandboxed `python` below `root` in the host's process table."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if b"fastmath-sandbox: " not in b"\0".join(argv) or not _descends(int(pid), root):  # the child's CONFIG
            continue
        if os.path.basename(argv[0]) == b"bwrap" or argv[0].decode() == python:
            uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
            seen[int(pid)] = [int(x) for x in uid_line.split()[1:]]


def _descends(pid: int, root: int) -> bool:
    while pid > 1:
        if pid == root:
            return True
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[1])
        except OSError:
            return False
    return False


def _run_batch(user: str, argv: list[str], cwd: Path) -> Batch:
    """Run every case in one runner process (`argv` ends with its interpreter), watching the process table."""
    python = os.path.realpath(argv[-1])
    batch = Batch(user, {}, knobs_before=_knobs())
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [*argv, "-c", RUNNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, env=env
    )
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            _sandbox_uids(proc.pid, python, batch.uids)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        out, err = proc.communicate(json.dumps(cases()).encode(), timeout=300)
    finally:
        done.set()
        watcher.join()
    assert proc.returncode == 0, err.decode()[-3000:]
    batch.results = json.loads(out)
    batch.knobs_after = _knobs()
    return batch


@pytest.fixture(scope="module", params=["root", "ordinary"])
def batch(request: pytest.FixtureRequest) -> Iterator[Batch]:
    """Every case, run by one runner process as root or as an ordinary user."""
    if os.geteuid() != 0:
        if request.param == "root":
            pytest.skip("fastmath does not run as root here")
        argv = [sys.executable]  # the ordinary user is the one running the tests
    elif request.param == "root":
        argv = [sys.executable]  # this machine's interpreter lives under root's 0700 home: the staged path
    else:
        python = shutil.which("python3", path="/usr/bin:/bin")
        setpriv = shutil.which("setpriv")
        if python is None or setpriv is None:
            pytest.skip("no system python3 (that an ordinary user can run) or no setpriv")
        argv = [setpriv, f"--reuid={ORDINARY_UID}", f"--regid={ORDINARY_UID}", "--clear-groups", python]
    cwd = Path(tempfile.mkdtemp(prefix="fastmath-test-"))
    cwd.chmod(0o777)
    try:
        yield _run_batch(request.param, argv, cwd)
    finally:
        shutil.rmtree(cwd)


def expected_uid(user: str) -> int:
    if os.geteuid() != 0:
        return os.geteuid()
    return sandbox.UNPRIVILEGED_ID if user == "root" else ORDINARY_UID


def test_no_sandbox_process_runs_as_host_root(batch: Batch) -> None:
    """Seen in the host's process table while they ran: bwrap and every sandboxed interpreter."""
    assert len(batch.uids) >= 2, batch.uids  # the sleeper at least: bwrap and its interpreter
    wanted = expected_uid(batch.user)
    assert {tuple(uids) for uids in batch.uids.values()} == {(wanted,) * 4}, batch.uids
    identity = batch.results["sleeper"]["limits"][0]
    assert identity.startswith(f"uid {wanted} outside"), identity
    assert batch.results["sleeper"]["stdout"] == "slept\n"


def test_kernel_settings_cannot_be_opened_for_writing(batch: Batch) -> None:
    result = batch.results["kernel_settings"]
    assert result["ok"], result["error"]
    assert result["stdout"].split() == ["FileNotFoundError"] * len(KNOBS)  # there is no /proc at all
    assert batch.knobs_after == batch.knobs_before


def test_no_process_memory_is_reachable(batch: Batch) -> None:
    result = batch.results["process_memory"]
    assert result["ok"], result["error"]
    lines = result["stdout"].splitlines()
    assert lines[:3] == ["FileNotFoundError"] * 3
    assert lines[3:] == [f"-1 {_refused(name)}" for name in ("process_vm_writev", "pidfd_getfd", "kcmp")]


def test_sysv_shared_memory_is_refused(batch: Batch) -> None:
    result = batch.results["sysv_memory"]
    assert result["ok"], result["error"]
    assert result["stdout"].splitlines() == [f"-1 {_refused('shmget')}"] * 4


def test_no_socket_family_opens(batch: Batch) -> None:
    """vsock shares the VM's port space with the host; netlink talks to the kernel: neither opens, nor any."""
    result = batch.results["sockets"]
    assert result["ok"], result["error"]
    assert result["stdout"].splitlines() == [f"{family} {_refused('socket')}" for family in (40, 16, 1, 2)]


@pytest.mark.parametrize("where", ["/tmp", "/dev/shm"])
@pytest.mark.parametrize("what", ["bytes", "inodes", "symlinks"])
def test_tmp_and_dev_shm_cannot_be_filled(batch: Batch, where: str, what: str) -> None:
    result = batch.results[f"fill_{where}_{what}"]
    assert not result["ok"]
    if what == "symlinks":  # symlinkat where the machine has no symlink call (aarch64)
        assert re.fullmatch(
            r"system call symlink(at)? refused \(not in the sandbox's seccomp allow-list\)", result["error"]
        )
    else:  # a file with bytes, or an empty one (an inode)
        assert result["error"].startswith("OSError: [Errno 30] Read-only file system"), result["error"]
    assert result["seconds"] < 5, "it failed at the first file, not at a limit"


def test_every_exit_status_comes_back_as_a_result(batch: Batch) -> None:
    for status in range(256):
        result = batch.results[f"exit_{status}"]
        if status == 0:
            assert result["ok"] and result["error"] is None
            continue
        assert not result["ok"]
        error = result["error"]
        assert error.startswith(f"exit status {status}"), error
        if status - 128 in signal.valid_signals():  # bwrap reports signal N as 128 + N: both are said
            assert f"or killed by {sandbox._signal_name(status - 128)}" in error, error
        else:
            assert "killed" not in error, error


def test_self_sent_signals_neither_hang_nor_crash_the_runner(batch: Batch) -> None:
    """The program is its PID namespace's init: signals it sends itself are ignored, stops included."""
    for name in SELF_SIGNALS:
        result = batch.results[f"signal_{name}"]
        assert result["ok"] and result["stdout"] == "still running\n", (name, result)
        assert result["seconds"] < 5, name
    for case in ("abort", "segfault"):  # faults the kernel forces on init: killed, reported as 128 + N
        result = batch.results[case]
        assert not result["ok"] and result["seconds"] < 5, result
        assert re.fullmatch(r"exit status \d+ \(or killed by SIG[A-Z]+: .*\)", result["error"]), result["error"]


def test_a_refused_call_is_named(batch: Batch) -> None:
    result = batch.results["refused_call"]
    assert result["error"] == "system call mount refused (not in the sandbox's seccomp allow-list)"


def test_results_carry_no_control_characters() -> None:
    """Escape sequences, C1 controls and bidi overrides never reach a page, a terminal or a results file."""
    result = sandbox.run_program("print('\\x1b[2J4\\u202e2\\x9b\\x07\\r')\nraise ValueError('\\x1b]0;pwned\\x07')")
    assert result.stdout == "[2J42\n"
    assert result.error == "ValueError: ]0;pwned"


@pytest.mark.skipif(os.geteuid() != 0, reason="the drop from root is tested as root")
def test_root_that_cannot_drop_privileges_refuses_pot(tmp_path: Path) -> None:
    """Root without CAP_SETUID/CAP_SETGID (a locked-down container): refuse with the fix, never run as root."""
    program = tmp_path / "p.py"
    program.write_text("print(6 * 7)\n")
    no_setuid = ["setpriv", "--bounding-set=-setuid,-setgid", "--inh-caps=-setuid,-setgid"]
    done = subprocess.run(
        [*no_setuid, sys.executable, "-m", "fastmath", "sandbox", str(program)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    assert f"as root, programs run as uid {sandbox.UNPRIVILEGED_ID}, which fails" in done.stderr
    assert "run fastmath as an ordinary user" in done.stderr and "Traceback" not in done.stderr
