"""The program-of-thought sandbox, tested by really running hostile programs.

Every hostile program must leave the host untouched, checked from outside: a canary file, the host
directories it names, a TCP listener, the process table, the evaluator's environment. Most must also
fail (ok False, answer None), so the evaluator grades them wrong. The escape table runs each program
twice: through `run_program`, where the in-process guard usually refuses it first, and with no
in-process guard at all, where bubblewrap alone has to hold it. Separate tests switch the guard off
from inside, through `__import__.__globals__`, the route a security probe found.
"""

from __future__ import annotations

import ast
import errno
import json
import os
import re
import resource
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import fastmath
from fastmath import cli
from fastmath.errors import FastmathError
from fastmath.eval import sandbox, seccomp
from fastmath.eval.sandbox import SandboxResult, extract_program, program_answer, run_program

from ..conftest import fastmath_cli

REPO = Path(fastmath.__file__).resolve().parents[1]
PYTHON = Path(os.path.realpath(sys.executable))
STDLIB = Path(sysconfig.get_path("stdlib"))
LIBPYTHON = Path(sysconfig.get_config_var("LIBDIR") or "/", sysconfig.get_config_var("INSTSONAME") or "")

# Reaches the already-loaded `os` module without importing it, as an attacker would: this passes the
# import guard, so these cases exercise the audit hook.
ESCAPE_OS = (
    "wrap = next(c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close')\n"
    "os = wrap.__init__.__globals__\n"
)
# Reaches the real __import__ (not the guarded one) through a stdlib function's globals.
ESCAPE_IMPORT = ESCAPE_OS + "imp = os['__builtins__']['__import__']\n"
# The route a security probe found: the guard's own globals, through the builtin it replaced. After
# this, every import and every audited event is allowed; only the operating system stands in the way.
GUARD_OFF = (
    "g = __import__.__globals__\n"
    "g['allowed'] = g['ALLOWED_EVENTS'] = type('Everything', (), {'__contains__': lambda self, item: True})()\n"
)


def fenced(code: str) -> str:
    return f"Let me compute this.\n```python\n{code}\n```\nThe program prints the answer."


def assert_refused(result: SandboxResult | None, reason: str = "forbidden") -> None:
    """A refused program fails with the reason and has no answer, so it is graded wrong."""
    assert result is not None
    assert not result.ok
    assert result.error is not None and result.error.startswith(reason), result.error
    assert result.answer is None


# --- ordinary programs ----------------------------------------------------------------------------


def test_correct_program_prints_42() -> None:
    answer, result = program_answer(fenced("apples = 6\nboxes = 7\nprint(apples * boxes)"))
    assert answer == "42"
    assert result is not None and result.ok and result.error is None
    assert result.isolation == "bwrap"


def test_allowed_modules_work() -> None:
    code = (
        "from fractions import Fraction\nimport math, statistics, datetime, collections\n"
        "d = datetime.datetime.strptime('2024-03-01', '%Y-%m-%d') - datetime.datetime(2024, 2, 1)\n"
        "print(Fraction(1, 3) + Fraction(1, 6), math.comb(5, 2), statistics.mean([1, 2, 3]), d.days)\n"
        "print(collections.Counter('aab')['a'])"
    )
    result = run_program(code)
    assert result.ok, result.error
    assert result.stdout.splitlines() == ["1/2 10 2 29", "2"]
    assert result.answer == "2"


def test_extract_program_takes_last_python_or_bare_fence() -> None:
    text = "```python\nprint(1)\n```\nthen\n```\nprint(2)\n```\n```output\n2\n```"
    assert extract_program(text) == "print(2)\n"
    assert extract_program("```py\nx = 3\nprint(x)\n```") == "x = 3\nprint(x)\n"
    assert extract_program("```json\n{}\n```") is None
    assert extract_program("The answer is 5.") is None
    assert extract_program("```python\nprint(1)\n```\n```python\nprint(2)") == "print(1)\n"  # unclosed


def test_no_program_means_no_answer() -> None:
    assert program_answer("I think the answer is 12.") == (None, None)


def test_program_printing_nothing_has_no_answer() -> None:
    answer, result = program_answer(fenced("x = 6 * 7"))
    assert answer is None
    assert result is not None and result.ok


def test_syntax_error_fails() -> None:
    answer, result = program_answer(fenced("print(6 * 7"))
    assert answer is None
    assert_refused(result, "SyntaxError")


def test_exception_reports_its_last_line() -> None:
    result = run_program("print(1)\nprint(1 / 0)")
    assert_refused(result, "ZeroDivisionError: division by zero")
    assert result.stdout == "1\n"  # kept for debugging, but not an answer


def test_limits_must_be_usable() -> None:
    with pytest.raises(FastmathError, match="too small"):
        run_program("print(1)", timeout_s=0)
    with pytest.raises(FastmathError, match="too small"):
        run_program("print(1)", memory_mb=8)


def test_overlong_program_is_not_run() -> None:
    result = run_program("x = 1\n" * 20_000)
    assert (result.ok, result.error, result.isolation) == (False, "program too long", "bwrap")


def test_concurrent_runs_keep_their_own_output() -> None:
    """The evaluator runs programs from a thread pool: runs must not mix up pipes, limits or results."""
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: run_program(f"print({i} * {i})").answer, range(16)))
    assert answers == [str(i * i) for i in range(16)]


def test_each_run_starts_in_an_empty_read_only_tmp() -> None:
    code = GUARD_OFF + "import os\nprint(os.getcwd(), os.listdir('.'))\nopen('left-behind', 'w').close()"
    first, second = run_program(code), run_program(code)
    assert first.stdout == second.stdout == "/tmp []\n"
    assert_refused(first, "OSError: [Errno 30] Read-only file system")


# --- limits ---------------------------------------------------------------------------------------


def test_infinite_loop_is_stopped_within_the_timeout() -> None:
    start = time.monotonic()
    answer, result = program_answer(fenced("while True:\n    pass"), timeout_s=1.0)
    elapsed = time.monotonic() - start
    assert_refused(result, "timeout")
    assert answer is None
    assert elapsed < 1.0 + 3.0  # a correctness bound, not a benchmark


def test_output_is_capped() -> None:
    start = time.monotonic()
    result = run_program("while True:\n    print('x' * 100)", timeout_s=5.0)
    assert_refused(result, "output limit")
    assert len(result.stdout) <= 10_000
    assert time.monotonic() - start < 5.0


@pytest.mark.parametrize("alloc", ["x = bytearray(10**10)", "x = [0] * 10**10"])
def test_huge_allocation_hits_the_memory_limit(alloc: str) -> None:
    own_limit = resource.getrlimit(resource.RLIMIT_AS)
    answer, result = program_answer(fenced(alloc + "\nprint(len(x))"), memory_mb=256)
    assert_refused(result, "memory limit")
    assert answer is None
    assert resource.getrlimit(resource.RLIMIT_AS) == own_limit  # the limit was the child's alone
    assert run_program("print(6 * 7)").answer == "42"


@pytest.mark.parametrize(
    "bomb",
    ["import os\nwhile True:\n    os.fork()", ESCAPE_OS + "while True:\n    os['fork']()"],
)
def test_fork_bomb_is_harmless(bomb: str) -> None:
    start = time.monotonic()
    assert_refused(run_program(bomb, timeout_s=2.0))
    assert time.monotonic() - start < 2.0 + 3.0


# --- the in-process guard (second layer) ----------------------------------------------------------


@pytest.mark.parametrize("via", ["open", "escape"])
def test_cannot_read_files(tmp_path: Path, via: str) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET-1234\n")
    for path in ("/etc/passwd", str(secret)):
        if via == "open":
            code = f"print(open({path!r}).read())"
        else:  # the raw file class, found without any import
            code = (
                "def walk(c):\n    yield c\n"
                "    for s in type.__subclasses__(c):\n        yield from walk(s)\n"
                "FileIO = next(c for c in walk(object) if c.__name__ == 'FileIO')\n"
                f"print(FileIO({path!r}).read())"
            )
        answer, result = program_answer(fenced(code))
        assert_refused(result, "forbidden: open")
        assert answer is None
        assert "TOPSECRET" not in result.stdout and "root:" not in result.stdout


def test_refusal_cannot_be_caught() -> None:
    code = "try:\n    open('/etc/passwd').read()\nexcept BaseException:\n    pass\nprint(42)"
    answer, result = program_answer(fenced(code))
    assert_refused(result, "forbidden: open")
    assert answer is None


@pytest.mark.parametrize(
    "connect",
    [
        "import socket\ns = socket.socket()\ns.connect(('127.0.0.1', PORT))",
        "__import__('socket').create_connection(('127.0.0.1', PORT))",
        ESCAPE_IMPORT + "imp('socket').create_connection(('127.0.0.1', PORT))",
    ],
)
def test_cannot_open_sockets(connect: str) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        result = run_program(connect.replace("PORT", str(port)) + "\nprint('connected')")
        assert_refused(result, "forbidden")
        readable, _, _ = select.select([listener], [], [], 0.2)
        assert not readable, "the listener received a connection"


@pytest.mark.parametrize(
    "remove",
    [
        "import os\nos.remove(PATH)",
        "import shutil\nshutil.rmtree(DIR)",
        ESCAPE_OS + "os['remove'](PATH)",
        ESCAPE_OS + "os['rename'](PATH, PATH + '.moved')",
        ESCAPE_OS + "os['rmdir'](DIR)",
    ],
)
def test_cannot_delete_files(tmp_path: Path, remove: str) -> None:
    victim = tmp_path / "keep.txt"
    victim.write_text("keep me")
    code = remove.replace("PATH", repr(str(victim))).replace("DIR", repr(str(tmp_path)))
    assert_refused(run_program(code))
    assert victim.read_text() == "keep me"


@pytest.mark.parametrize(
    "command",
    [
        "__import__('os').system('touch MARKER')",
        "import subprocess\nsubprocess.run(['touch', MARKER_PATH])",
        ESCAPE_OS + "os['system']('touch MARKER')",
        ESCAPE_OS + "os['posix_spawn']('/usr/bin/touch', ['touch', MARKER_PATH], {})",
        ESCAPE_OS + "os['execv']('/usr/bin/touch', ['touch', MARKER_PATH])",
        ESCAPE_IMPORT + "imp('subprocess').run(['touch', MARKER_PATH])",
    ],
)
def test_cannot_run_commands(tmp_path: Path, command: str) -> None:
    marker = tmp_path / "ran"
    code = command.replace("MARKER_PATH", repr(str(marker))).replace("MARKER", str(marker))
    assert_refused(run_program(code))
    assert not marker.exists()


@pytest.mark.parametrize(
    "attack",
    [
        "fd = os['pidfd_open'](os['getppid']())\nos['sys'].modules['_signal'].pidfd_send_signal(fd, SIGNAL)",
        "os['kill'](os['getppid'](), SIGNAL)",
        (
            "boot = os['sys'].modules['_frozen_importlib']\n"
            "importer = boot.BuiltinImporter\n"
            "fresh = lambda name: importer.create_module(boot.ModuleSpec(name, importer))\n"
            "fd = fresh('posix').pidfd_open(os['getppid']())\n"
            "fresh('_signal').pidfd_send_signal(fd, SIGNAL)"
        ),
    ],
)
def test_cannot_signal_the_evaluator(attack: str) -> None:
    received: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: received.append(signum))
    try:
        result = run_program(ESCAPE_OS + attack.replace("SIGNAL", str(int(signal.SIGUSR1))))
        time.sleep(0.1)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert result.error is not None and not result.ok
    assert received == []


def test_frame_introspection_is_refused() -> None:
    code = "try:\n    1 / 0\nexcept Exception as e:\n    print(e.__traceback__.tb_frame.f_globals)"
    assert_refused(run_program(code), "forbidden: object.__getattr__")


# --- the operating-system layer -------------------------------------------------------------------


def test_guard_off_really_switches_the_guard_off() -> None:
    """GUARD_OFF defeats the in-process guard: what follows it meets only the operating system."""
    result = run_program(GUARD_OFF + "import os\nprint(os.getuid(), os.getgid(), sorted(os.listdir('/')))")
    assert result.ok, result.error
    uid, gid, listing = result.stdout.split(" ", 2)
    assert (uid, gid) == ("65534", "65534")  # not root inside either
    assert {"etc", "home", "work"}.isdisjoint(ast.literal_eval(listing))


def test_a_program_that_defeated_the_guard_still_cannot_touch_the_host(tmp_path: Path) -> None:
    """The reported attack, end to end: guard off, then delete, truncate, create, read, spawn, signal."""
    canary = tmp_path / "canary.txt"
    canary.write_text("still here")
    attack = GUARD_OFF + (
        "import os\n"
        "for step in (lambda: os.remove(CANARY), lambda: open(CANARY, 'w').write('gone'),\n"
        "             lambda: os.mknod(CANARY + '.node'), lambda: print(open('/etc/passwd').read()),\n"
        "             lambda: os.system('rm -f ' + CANARY), lambda: os.fork(), lambda: os.kill(PARENT, 9)):\n"
        "    try:\n        print(step())\n    except Exception as exc:\n        print(type(exc).__name__)\n"
    )
    result = run_program(attack.replace("CANARY", repr(str(canary))).replace("PARENT", str(os.getpid())))
    assert result.ok and result.isolation == "bwrap", result.error
    assert result.stdout.split() == [
        "OSError",  # seccomp refuses unlink (the errno names it)
        "FileNotFoundError",  # the host's tmp dir does not exist in the sandbox
        "OSError",  # mknodat refused
        "FileNotFoundError",  # nor does /etc
        "32512",  # system(): exit status 127, no shell ran (seccomp refuses new processes; there is no /bin/sh)
        "OSError",  # clone refused
        "ProcessLookupError",  # the evaluator is outside its PID namespace
    ]
    assert canary.read_text() == "still here"
    assert sorted(os.listdir(tmp_path)) == ["canary.txt"]


def seccomp_decision(filter_bytes: bytes, arch: int, nr: int, args: tuple[int, ...] = ()) -> int:
    """What the kernel would do with a call: the hand-assembled BPF, run by a small interpreter
    (aarch64 cannot be run here, so it is checked this way)."""
    program = [struct.unpack_from("=HBBI", filter_bytes, at) for at in range(0, len(filter_bytes), 8)]
    data = struct.pack("=iIQ6Q", nr, arch, 0, *args, *[0] * (6 - len(args)))
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = program[pc]
        pc += 1
        if code == 0x20:  # load a 32-bit word of seccomp_data
            acc = struct.unpack_from("=I", data, k)[0]
        elif code in (0x15, 0x35):  # jump if equal / if greater or equal
            pc += jt if (acc == k if code == 0x15 else acc >= k) else jf
        elif code == 0x04:  # add a constant
            acc = (acc + k) & 0xFFFFFFFF
        else:
            assert code in (0x06, 0x16)  # return a constant / the accumulator
            return k if code == 0x06 else acc


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_seccomp_allows_only_its_list(machine: str) -> None:
    arch = seccomp.ARCHES[machine][0]
    filter_bytes = seccomp.build(machine)
    allow, kill, enosys = 0x7FFF0000, 0x80000000, 0x50000 | errno.ENOSYS
    allowed = seccomp.call_numbers(seccomp.ALLOWED, machine)
    refused = seccomp.call_numbers(seccomp.NAMED_REFUSALS, machine)
    for name, nr in allowed.items():
        if name != "ioctl":
            assert seccomp_decision(filter_bytes, arch, nr) == allow, name
    for name in ("clone", "ptrace", "process_vm_writev", "pidfd_getfd", "kcmp", "unshare", "shmget", "socket"):
        expected = 0x50000 | (seccomp.REFUSED_ERRNO_BASE + refused[name])
        assert seccomp_decision(filter_bytes, arch, refused[name]) == expected, name
        assert seccomp.refusal_names(machine)[expected & 0xFFFF] == name
    unlisted = next(nr for nr in range(400, 1024) if nr not in allowed.values())
    assert seccomp_decision(filter_bytes, arch, unlisted) == 0x50000 | (seccomp.REFUSED_ERRNO_BASE + unlisted)
    ioctl = allowed["ioctl"]
    assert seccomp_decision(filter_bytes, arch, ioctl, (1, 0x5401)) == allow  # TCGETS: isatty()
    tiocsti = 0x50000 | (seccomp.REFUSED_ERRNO_BASE + ioctl)
    assert seccomp_decision(filter_bytes, arch, ioctl, (1, 0x5412)) == tiocsti  # TIOCSTI: typing into a terminal
    assert seccomp_decision(filter_bytes, arch, 435) == enosys  # clone3: libc falls back to clone, refused by name
    assert seccomp_decision(filter_bytes, arch, 5000) == enosys  # beyond any call: errno stays below 4096
    assert seccomp_decision(filter_bytes, 0x40000003, 3) == kill  # another ABI (i386 through int 0x80) dies
    if machine == "x86_64":
        assert seccomp_decision(filter_bytes, arch, 0x40000000) == enosys  # the x32 ABI


@pytest.mark.parametrize(
    ("machine", "header", "pattern"),
    [
        ("x86_64", "/usr/include/x86_64-linux-gnu/asm/unistd_64.h", r"#define __NR_(\w+) (\d+)"),
        ("aarch64", "/usr/include/asm-generic/unistd.h", r"#define __NR(?:3264)?_(\w+) (\d+)"),
    ],
)
def test_seccomp_numbers_match_the_kernel_headers(machine: str, header: str, pattern: str) -> None:
    """The tables are typed by hand: where the kernel's headers are installed, every number must agree."""
    if not Path(header).exists():
        pytest.skip(f"{header} is not installed (linux-libc-dev)")
    known: dict[str, int] = {}
    for name, number in re.findall(pattern, Path(header).read_text()):
        known.setdefault({"fstatat": "newfstatat"}.get(name, name), int(number))
    for table in (seccomp.ALLOWED, seccomp.NAMED_REFUSALS):
        for name, number in seccomp.call_numbers(table, machine).items():
            assert known.get(name, number) == number, name  # calls newer than the headers are skipped


# --- without bubblewrap ---------------------------------------------------------------------------


def test_without_bwrap_it_refuses_unless_unsafe_is_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "BWRAP", str(tmp_path / "no-such-bwrap"))
    with pytest.raises(FastmathError, match=r"bubblewrap .*apt-get install -y bubblewrap.*allow_unsafe=True"):
        run_program("print(6 * 7)")
    with pytest.raises(FastmathError, match="bubblewrap"):  # PoT goes through the same check
        program_answer(fenced("print(6 * 7)"))
    with pytest.warns(RuntimeWarning, match="without OS isolation"):
        result = run_program("print(6 * 7)", allow_unsafe=True)
    assert (result.answer, result.isolation) == ("42", "in-process (unsafe)")
    with pytest.warns(RuntimeWarning):  # the guard is all there is now, and it still refuses
        assert_refused(run_program("print(open('/etc/passwd').read())", allow_unsafe=True), "forbidden: open")


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder anyone may use: started as root, bwrap runs as an unprivileged uid (pytest's tmp_path is
    under a 0700 folder)."""
    path = Path(tempfile.mkdtemp(prefix="fastmath-test-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path)


@pytest.mark.parametrize(
    ("complaint", "fix"),
    [
        ("setting up uid map: Permission denied", r"uid map.*kernel.unprivileged_userns_clone=1.*apparmor"),
        ("No permissions to create new namespace", r"namespace.*kernel.unprivileged_userns_clone=1"),
        ("Unknown option --clearenv", r"--clearenv.*upgrade it to 0.5"),
        ("execvp /opt/py/bin/python3: No such file or directory", r"does not start inside bubblewrap.*sees only"),
    ],
    ids=["userns_off", "apparmor", "bwrap_too_old", "python_needs_more_files"],
)
def test_a_bwrap_that_cannot_run_names_the_fix(
    open_dir: Path, monkeypatch: pytest.MonkeyPatch, complaint: str, fix: str
) -> None:
    """What bwrap does where user namespaces are off, or where it is too old: fail before running anything."""
    fake = open_dir / "bwrap"
    fake.write_text(f"#!/bin/sh\necho 'bwrap: {complaint}' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sandbox, "BWRAP", str(fake))
    with pytest.raises(FastmathError, match=fix):
        run_program("print(6 * 7)")


def test_allow_unsafe_never_replaces_a_working_bwrap() -> None:
    assert run_program("print(6 * 7)", allow_unsafe=True).isolation == "bwrap"


def test_bwrap_is_probed_once_per_setting(open_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = open_dir / "calls"
    wrapper = open_dir / "bwrap"
    wrapper.write_text(f'#!/bin/sh\necho run >> {log}\nexec {shutil.which("bwrap")} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setattr(sandbox, "BWRAP", str(wrapper))
    assert [run_program("print(6 * 7)").answer for _ in range(3)] == ["42"] * 3
    assert log.read_text().count("run") == 1 + 3  # the probe, then the three programs


# --- the command line -----------------------------------------------------------------------------


def test_cli_prints_the_result_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    program = tmp_path / "answer.py"
    program.write_text("print('working...')\nprint(6 * 7)\n")
    assert cli.main(["sandbox", str(program)]) == 0
    out = json.loads(capsys.readouterr().out)
    limits = out.pop("limits")
    assert out == {"ok": True, "answer": "42", "stdout": "working...\n42\n", "error": None, "isolation": "bwrap"}
    assert sandbox._SECCOMP_LIMIT in limits and "memory 256 MiB (RLIMIT_AS)" in limits
    program.write_text("import os\n")
    assert cli.main(["sandbox", str(program), "--timeout", "2", "--memory-mb", "128"]) == 1
    assert json.loads(capsys.readouterr().out)["error"] == "forbidden: import os"


def test_cli_explains_bad_program_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    latin1 = tmp_path / "latin1.py"
    latin1.write_bytes("print('café')\n".encode("latin-1"))
    for path, message in (
        (tmp_path / "missing.py", "does not exist"),
        (tmp_path, "cannot read"),
        (latin1, "not UTF-8"),
    ):
        assert cli.main(["sandbox", str(path)]) == 2
        assert message in capsys.readouterr().err


def test_cli_in_a_real_process(tmp_path: Path) -> None:
    """`python -m fastmath sandbox`: JSON on success; a bad file is `error: ...` and exit status 2."""
    program = tmp_path / "p.py"
    program.write_text("print(2 ** 10)\n")
    done = fastmath_cli("sandbox", str(program), cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["answer"] == "1024"
    missing = fastmath_cli("sandbox", "nope.py", cwd=tmp_path, timeout=120)
    assert (missing.returncode, missing.stderr) == (2, "error: program file nope.py does not exist\n")


# --- the escape table -----------------------------------------------------------------------------

OK = "ok"  # the run must succeed (what it printed is then checked to reveal nothing of the host)
ANY = "any"  # any outcome, as long as the host is untouched


def sandbox_children(directory: str) -> set[str] | None:
    """What a listing of `directory` may show inside the sandbox; None where any content is fine."""
    own = [PYTHON, STDLIB, LIBPYTHON, *(Path(p) for p in ("/usr/lib", "/usr/lib64", "/lib", "/lib64", "/dev", "/proc"))]
    path = Path(directory)
    if any(path == root or root in path.parents for root in own):
        return None  # the sandbox's own tree: its interpreter, its libraries, its /proc and /dev
    if path == Path("/tmp") or Path("/tmp") in path.parents:
        return set()  # its own empty tmpfs: nothing of the host's /tmp
    return {p.relative_to(path).parts[0] for p in [*own, Path("/tmp")] if path in p.parents}


def reveals_only_the_sandbox(stdout: str) -> None:
    """Lines `PATH [names]` print listings: each may name only the sandbox's own tree, nothing else."""
    for line in stdout.splitlines():
        path, _, rest = line.partition(" ")
        if rest.startswith("["):
            allowed = sandbox_children(path)
            assert allowed is None or set(ast.literal_eval(rest)) <= allowed, line


def sees_no_host_path(stdout: str) -> None:
    assert "True" not in stdout, stdout


def refused(call: str) -> str:
    """The error of a program that made a system call the seccomp allow-list lacks."""
    return f"system call {call} refused (not in the sandbox's seccomp allow-list)"


# ptrace's errno in the sandbox: the base plus its number on this machine
REFUSED_PTRACE = seccomp.REFUSED_ERRNO_BASE + seccomp.call_numbers(seccomp.NAMED_REFUSALS, os.uname().machine)["ptrace"]


def printed(expected: str) -> Callable[[str], None]:
    """What a program that ran must have printed: the kernel's refusals, not success."""

    def check(stdout: str) -> None:
        assert stdout.strip() in ("", expected), stdout

    return check


@dataclass(frozen=True)
class Escape:
    """An attack, and what must come of it through `run_program` (`guarded`) and under bwrap alone
    (`bwrap_only`): OK, ANY, or the prefix of the error it must fail with."""

    id: str
    code: str
    guarded: str = "forbidden"
    bwrap_only: str = ANY
    timeout_s: float = 5.0
    check: Callable[[str], None] | None = field(default=None, compare=False)


LIST_HOST = (
    "for p in ('/', '/root', '/etc', '/home', '/work', @REPO@, @HOST@):\n"
    "    try:\n        print(p, sorted(os.listdir(p)))\n"
    "    except OSError as e:\n        print(p, type(e).__name__)\n"
)
CTYPES = ESCAPE_IMPORT + "ctypes = imp('ctypes')\nlibc = ctypes.CDLL(None, use_errno=True)\n"
SPAWN_SLEEPER = "[sys.executable, '-c', 'import time; time.sleep(60)', @TOKEN@], {'MARK': @TOKEN@}"
ESCAPES = [
    Escape(
        "globals_route_disables_guard",
        GUARD_OFF + "import os\nos.remove(@CANARY@)",
        guarded=refused("unlink"),  # the guard is off; seccomp refuses changes to any file system
    ),
    Escape(
        "globals_route_silences_reports",
        "g = __import__.__globals__\ng['report'] = lambda status, reason: None\n"
        "import os\nos.system('rm -f ' + @CANARY@)\nprint(open(@CANARY@).read())",
        guarded=ANY,
    ),
    Escape("subclass_walk_to_os_system", ESCAPE_OS + "os['system']('rm -f ' + @CANARY@ + '; echo pwned > ' + @DROP@)"),
    Escape("wrap_close_popen", ESCAPE_OS + "print(os['popen']('cat /etc/passwd; rm -f ' + @CANARY@).read())"),
    Escape(
        "ctypes_unlink_and_system",
        CTYPES + "print(libc.unlink(@CANARY@.encode()), libc.system(('touch ' + @DROP@).encode()))",
        check=printed("-1 32512"),  # no such file here; exit status 127: no shell ran
    ),
    Escape(
        "ctypes_ptrace",  # PTRACE_ATTACH to the evaluator (not in its PID namespace) and to its own init
        CTYPES + "print([(libc.ptrace(16, pid, 0, 0), ctypes.get_errno()) for pid in (@PARENT@, 1)])",
        check=printed(f"[(-1, {REFUSED_PTRACE}), (-1, {REFUSED_PTRACE})]"),  # seccomp names ptrace
    ),
    Escape(
        "ctypes_new_namespace_and_mount",
        CTYPES + "print(libc.unshare(0x10000000), libc.mount(b'none', b'/root', b'tmpfs', 0, None))",
        check=printed("-1 -1"),
    ),
    Escape(
        "mknod_in_host_dirs",  # raises no audit event: only the file system view stops it
        ESCAPE_OS + "os['mknod'](@DROP@)\nos['mknod'](@REPO@ + '/node-' + @TOKEN@)",
        guarded=refused("mknodat"),
        bwrap_only=refused("mknodat"),
    ),
    Escape(
        "mkfifo_in_host_dirs",
        ESCAPE_OS + "os['mkfifo'](@DROP@)\nos['mkfifo'](@REPO@ + '/fifo-' + @TOKEN@)",
        guarded=refused("mknodat"),
        bwrap_only=refused("mknodat"),
    ),
    Escape(
        "stat_host_paths",  # no audit event either
        ESCAPE_OS + "print([os['path'].exists(p) for p in (@CANARY@, @HOST@, @REPO@, '/etc/passwd', '/work', '/home',"
        " '/root/.ssh', '/root/.bashrc')])",
        guarded=OK,
        bwrap_only=OK,
        check=sees_no_host_path,
    ),
    Escape("listdir_host_dirs", "import os\n" + LIST_HOST, bwrap_only=OK, check=reveals_only_the_sandbox),
    Escape(
        "chdir_root_and_walk",
        "import os\nos.chdir('/')\n"
        "for top, dirs, files in os.walk('.'):\n"
        "    dirs[:] = [d for d in dirs if d not in ('usr', 'proc', 'dev', 'python3.11')]\n"
        "    print(os.path.abspath(top), sorted(dirs + files))\n",
        bwrap_only=OK,
        check=reveals_only_the_sandbox,
    ),
    Escape(
        "proc_environ",
        "import os\nparent = os.getppid()\n"
        "for p in ('/proc/self/environ', '/proc/1/environ', f'/proc/{parent}/environ', '/proc/@PARENT@/environ'):\n"
        "    try:\n        print(open(p, 'rb').read())\n    except OSError as e:\n        print(p, e)\n",
        bwrap_only=OK,  # the checks below: no secret in any of them
    ),
    Escape(
        "os_environ",
        ESCAPE_OS + "print(dict(os['environ']), os['getenv']('FASTMATH_TEST_SECRET'))",
        guarded=OK,
        bwrap_only=OK,
    ),
    Escape(
        "read_passwd_and_shadow",
        "print(open('/etc/passwd').read())\nprint(open('/etc/shadow').read())",
        guarded="forbidden: open",
        bwrap_only="FileNotFoundError",
    ),
    Escape(
        "proc_root_and_cwd_links",
        "print(open('/proc/1/root/etc/passwd').read())\nprint(open('/proc/self/cwd/../../etc/shadow').read())",
        guarded="forbidden: open",
        bwrap_only="FileNotFoundError",
    ),
    Escape(
        "host_process_memory",
        "print(open('/proc/@PARENT@/mem', 'rb').read(16))\nprint(open('/proc/@PARENT@/maps').read())",
        guarded="forbidden: open",
        bwrap_only="FileNotFoundError",
    ),
    Escape(
        "raw_disk_device",
        "print(open('/dev/vda', 'rb').read(512))\nprint(open('/dev/mem', 'rb').read(16))",
        guarded="forbidden: open",
        bwrap_only="FileNotFoundError",
    ),
    Escape(
        "socket_to_host_listener",
        "import socket\nsocket.create_connection(('127.0.0.1', @PORT@), timeout=1).sendall(b'pwned')",
        guarded="forbidden: import socket",
        bwrap_only=refused("socket"),  # no socket of any family
    ),
    Escape(
        "socket_ipv6_loopback",
        ESCAPE_IMPORT + "imp('socket').create_connection(('::1', @PORT6@), timeout=1).sendall(b'pwned')",
        bwrap_only=ANY,  # refused, or no IPv6 at all in its network namespace: the listener is the check
    ),
    Escape(
        "fork_setsid_outlives_run",
        ESCAPE_OS + f"sys = os['sys']\nif os['fork']() == 0:\n    os['setsid']()\n    os['execve'](sys.executable, "
        f"{SPAWN_SLEEPER})\nprint('parent done')",
        bwrap_only=refused("clone"),  # seccomp: no new processes
    ),
    Escape(
        "posix_spawn_setsid_daemon",
        ESCAPE_OS + f"sys = os['sys']\nos['posix_spawn'](sys.executable, {SPAWN_SLEEPER}, setsid=True)",
        bwrap_only=refused("clone"),
    ),
    Escape(
        "subprocess_shell",
        "import subprocess\nsubprocess.run('rm -f ' + @CANARY@ + '; touch ' + @DROP@, shell=True)",
        guarded="forbidden: import subprocess",
        bwrap_only=refused("pipe2"),  # subprocess makes its error pipe first
    ),
    Escape(
        "os_system_plain",
        "import os\nprint(os.system('touch ' + @DROP@))",
        guarded="forbidden: import os",
        bwrap_only=OK,
        check=printed("32512"),
    ),
    Escape(
        "execv_bin_sh",
        ESCAPE_OS + "os['execv']('/bin/sh', ['sh', '-c', 'rm -f ' + @CANARY@])",
        bwrap_only="FileNotFoundError",  # there is no /bin/sh to run
    ),
    Escape(
        "dev_tcp_via_bash",
        ESCAPE_OS + "print(os['system'](\"bash -c 'echo pwned > /dev/tcp/127.0.0.1/@PORT@'\"))",
        bwrap_only=OK,
        check=printed("32512"),
    ),
    Escape(
        "write_and_truncate_in_host_tmp",
        "open(@DROP@, 'w').write('x')\nopen(@CANARY@, 'w').close()",
        guarded="forbidden: open",
        bwrap_only="FileNotFoundError",
    ),
    Escape(
        "truncate_via_raw_fileio",
        "def walk(c):\n    yield c\n    for s in type.__subclasses__(c):\n        yield from walk(s)\n"
        "FileIO = next(c for c in walk(object) if c.__name__ == 'FileIO')\nFileIO(@CANARY@, 'w').close()",
        guarded="forbidden: open",
        bwrap_only="FileNotFoundError",
    ),
    Escape(
        "write_into_repo_and_cwd",
        "open(@REPO@ + '/pwned-' + @TOKEN@, 'w').write('x')\nopen(@CWD@ + '/pwned-' + @TOKEN@, 'w').write('x')",
        guarded="forbidden: open",
        bwrap_only="FileNotFoundError",
    ),
    Escape(
        "write_into_root_home",
        "open('/root/pwned-' + @TOKEN@, 'w').write('x')",
        guarded="forbidden: open",
        bwrap_only="OSError: [Errno 30]",  # read-only
    ),
    Escape(
        "write_into_interpreter_dir",
        "open(@STDLIB@ + '/pwned-' + @TOKEN@ + '.py', 'w').write('x')\nopen(@PYTHON@ + '-' + @TOKEN@, 'w').write('x')",
        guarded="forbidden: open",
        bwrap_only="OSError: [Errno 30]",
    ),
    Escape(
        "symlink_to_host_file",
        "import os\nos.symlink(@CANARY@, 'link')\nopen('link', 'w').write('pwned')",
        guarded="forbidden: import os",
        bwrap_only=refused("symlink"),
    ),
    Escape(
        "hardlink_to_host_file",
        "import os\nos.link(@CANARY@, 'link')",
        guarded="forbidden: import os",
        bwrap_only=refused("link"),
    ),
    Escape("fork_bomb", ESCAPE_OS + "while True:\n    os['fork']()", bwrap_only=refused("clone")),
    Escape(
        "thread_bomb",
        "import threading\nwhile True:\n    threading.Thread(target=threading.Event().wait).start()",
        bwrap_only="RuntimeError: can't start new thread",
    ),
    Escape("memory_bytearray", "x = bytearray(10**10)", guarded="memory limit", bwrap_only="memory limit"),
    Escape("memory_string", "x = 'x' * 10**10", guarded="memory limit", bwrap_only="memory limit"),
    Escape(
        "memory_list_growth",
        "chunks = []\nwhile True:\n    chunks.append(bytearray(2**20))",
        guarded="memory limit",
        bwrap_only="memory limit",
    ),
    Escape("output_bomb", "while True:\n    print('x' * 100)", guarded="output limit", bwrap_only="output limit"),
    Escape("huge_number_print", "print('1' + '0' * 5000)", guarded=OK, bwrap_only=OK),
    Escape("infinite_loop", "while True:\n    pass", guarded="timeout", bwrap_only="timeout", timeout_s=2.0),
    Escape(
        "sleep_forever",
        "import time\ntime.sleep(1000)",
        guarded="forbidden: import time",
        bwrap_only="timeout",
        timeout_s=2.0,
    ),
    Escape(
        "kill_parent_and_decoy",
        ESCAPE_OS + "for pid in (os['getppid'](), @PARENT@, @DECOY@):\n"
        "    try:\n        os['kill'](pid, 9)\n    except OSError as e:\n        print(pid, e)",
        guarded="forbidden: os.kill",
    ),
    Escape(
        "killpg_evaluator_group",
        ESCAPE_OS + "for group in (@PGID@, @DECOY@, 0):\n"
        "    try:\n        os['killpg'](group, 9)\n    except OSError as e:\n        print(group, e)",
        guarded="forbidden: os.killpg",
    ),
    Escape(
        "renice_and_pin_parent",  # no audit events: the guard deletes these; the PID namespace hides the parent
        ESCAPE_OS + "os['setpriority'](os['PRIO_PROCESS'], @PARENT@, 19)\nos['sched_setaffinity'](@PARENT@, {0})",
        guarded="KeyError",
        bwrap_only=refused("setpriority"),
    ),
    Escape(
        "pidfd_via_rebuilt_posix",
        ESCAPE_OS + "boot = os['sys'].modules['_frozen_importlib']\nimporter = boot.BuiltinImporter\n"
        "posix = importer.create_module(boot.ModuleSpec('posix', importer))\nposix.pidfd_open(@PARENT@)",
        guarded="AttributeError",  # the guard deleted the rebuilding function
        bwrap_only=refused("pidfd_open"),
    ),
    Escape(
        "read_bootstrap_globals",  # the runner's own globals hold only limits and the allow-list
        "g = __import__.__globals__\nprint(sorted(g))\nprint(g['CONFIG'])",
        guarded=OK,
    ),
    Escape(
        "sys_modules_swap",
        ESCAPE_OS + "os['sys'].modules['math'] = os['sys'].modules['os']\nimport math\nmath.system('touch ' + @DROP@)",
        guarded="forbidden: os.system",
    ),
    Escape(
        "gc_hunt_for_the_hook",
        ESCAPE_IMPORT + "gc = imp('gc')\n"
        "hook = next(o for o in gc.get_objects() if getattr(o, '__name__', '') == 'audit')\n"
        "hook.__globals__['ALLOWED_EVENTS'] = hook.__globals__['allowed'] = type('E', (), "
        "{'__contains__': lambda s, x: True})()\nopen(@DROP@, 'w').write('x')",
    ),
    Escape(
        "setrlimit_raise",
        "import resource\nresource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY,) * 2)\nx = bytearray(10**10)",
        guarded="forbidden: import resource",
        bwrap_only="ValueError",  # a hard limit cannot be raised without CAP_SYS_RESOURCE
    ),
]


@dataclass
class Observed:
    """A run's result and what the test saw of the host right after it."""

    result: SandboxResult
    canary_intact: bool
    host_listing: list[str]
    token_files: list[str]
    connections: list[str]
    processes: list[str]
    decoy_alive: bool


@dataclass(frozen=True)
class Host:
    """What the escape programs aim at: the evaluator, a decoy process, a secret, and a base directory."""

    pid: int
    pgid: int
    decoy: subprocess.Popen[bytes]
    secret: str
    base: Path


CANARY_TEXT = "canary: the host is untouched"


def attack(escape: Escape, guarded: bool, host: Host) -> Observed:
    """Run one escape program with its own canary, drop target, token and listeners; observe the host."""
    token = f"fmtok{uuid.uuid4().hex}"
    hostdir = host.base / f"{escape.id}-{'guarded' if guarded else 'bwrap_only'}"
    hostdir.mkdir()
    canary = hostdir / "canary.txt"
    canary.write_text(CANARY_TEXT)
    written = canary.stat().st_mtime_ns
    listeners = [_listener(socket.AF_INET, "127.0.0.1"), _listener(socket.AF_INET6, "::1")]
    values = {
        "CANARY": str(canary),
        "HOST": str(hostdir),
        "DROP": str(hostdir / f"pwned-{token}"),
        "REPO": str(REPO),
        "CWD": str(Path.cwd()),  # where the evaluator runs, usually the repo
        "PYTHON": str(PYTHON),
        "STDLIB": str(STDLIB),
        "TOKEN": token,
        "PORT": listeners[0].getsockname()[1] if listeners[0] else 9,
        "PORT6": listeners[1].getsockname()[1] if listeners[1] else 9,
        "PARENT": host.pid,
        "PGID": host.pgid,
        "DECOY": host.decoy.pid,
    }
    code = escape.code
    for name, value in values.items():
        code = code.replace(f"@{name}@", repr(value) if isinstance(value, str) else str(value))
    if guarded:
        result = run_program(code, timeout_s=escape.timeout_s)
    else:  # the internal switch: no import guard, no audit hook, nothing deleted; only bwrap and the limits
        result = sandbox._run(code, escape.timeout_s, 256, shutil.which(sandbox.BWRAP), guard=False)
    try:
        connections = [str(s.getsockname()) for s in listeners if s and select.select([s], [], [], 0.05)[0]]
    finally:
        for s in listeners:
            if s:
                s.close()
    watched = {REPO, Path.cwd(), Path("/root"), Path("/tmp"), hostdir, PYTHON.parent, STDLIB}
    return Observed(
        result=result,
        canary_intact=canary.exists() and canary.read_text() == CANARY_TEXT and canary.stat().st_mtime_ns == written,
        host_listing=sorted(os.listdir(hostdir)),
        token_files=[str(d / n) for d in watched if d.is_dir() for n in os.listdir(d) if token in n],
        connections=connections,
        processes=list(_processes_mentioning(token)),
        decoy_alive=host.decoy.poll() is None,
    )


def _listener(family: socket.AddressFamily, address: str) -> socket.socket | None:
    try:
        s = socket.socket(family, socket.SOCK_STREAM)
    except OSError:
        return None
    try:
        s.bind((address, 0))
        s.listen(8)
        return s
    except OSError:  # no IPv6 loopback on this host
        s.close()
        return None


def _processes_mentioning(token: str) -> Iterator[str]:
    """Host processes whose command line or environment carries the token."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        for part in ("cmdline", "environ"):
            if token.encode() in _read(f"/proc/{pid}/{part}"):
                yield f"{pid} ({part})"


def _read(path: str) -> bytes:
    """A /proc file's bytes, or nothing once the process is gone."""
    try:
        return Path(path).read_bytes()
    except OSError:
        return b""


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    """The evaluator's side: a secret in its environment and a decoy process to kill."""
    secret = f"s3cr3t-{uuid.uuid4()}"
    os.environ["FASTMATH_TEST_SECRET"] = secret
    decoy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
    try:
        yield Host(os.getpid(), os.getpgrp(), decoy, secret, tmp_path_factory.mktemp("escape"))
    finally:
        decoy.kill()
        decoy.wait()
        del os.environ["FASTMATH_TEST_SECRET"]


@pytest.fixture(scope="module")
def observed(host: Host) -> dict[tuple[str, bool], Observed]:
    """Every escape, with and without the guard, run concurrently (as the evaluator's thread pool would)."""
    runs = [(escape, guarded) for escape in ESCAPES for guarded in (True, False)]
    with ThreadPoolExecutor(4) as pool:
        results = pool.map(lambda run: attack(*run, host), runs)
        return {(escape.id, guarded): seen for (escape, guarded), seen in zip(runs, results, strict=True)}


def test_the_escape_table_is_large_enough() -> None:
    assert len(ESCAPES) >= 30
    assert len({e.id for e in ESCAPES}) == len(ESCAPES)


@pytest.mark.parametrize("guarded", [True, False], ids=["guarded", "bwrap_only"])
@pytest.mark.parametrize("escape", ESCAPES, ids=[e.id for e in ESCAPES])
def test_escape_leaves_the_host_untouched(
    escape: Escape, guarded: bool, observed: dict[tuple[str, bool], Observed], host: Host
) -> None:
    seen = observed[escape.id, guarded]
    result = seen.result
    assert result.isolation == "bwrap"
    # The host, checked from outside.
    assert seen.canary_intact, "the canary was deleted or changed"
    assert seen.host_listing == ["canary.txt"], "a file appeared in the host's tmp dir"
    assert seen.token_files == [], "a file appeared in a host directory"
    assert seen.connections == [], "a host listener received a connection"
    assert seen.processes == [], "a process outlived the run"
    assert seen.decoy_alive, "a host process was killed"
    shown = result.stdout + (result.error or "")
    for leak in (host.secret, "FASTMATH_TEST_SECRET=", CANARY_TEXT, "root:x:0:0"):
        assert leak not in shown
    if escape.check is not None:
        escape.check(result.stdout)
    # The run itself.
    expected = escape.guarded if guarded else escape.bwrap_only
    if expected == OK:
        assert result.ok, result.error
    elif expected != ANY:
        assert_refused(result, expected)
    if escape.id == "huge_number_print":
        assert result.answer == "1" + "0" * 5000


def test_no_sandbox_process_outlives_the_table(observed: dict[tuple[str, bool], Observed]) -> None:
    """After every run has returned, nothing started for it is left under this process."""
    assert _sandbox_processes_under(os.getpid()) == []


def test_the_sandbox_dies_with_the_evaluator(tmp_path: Path) -> None:
    """An evaluator killed mid-run (OOM killer, Ctrl-C twice) takes the running program with it."""
    evaluator = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "from fastmath.eval.sandbox import run_program\nrun_program('print(1)')\n"
                "print('probed', flush=True)\nrun_program('while True: pass', timeout_s=60)"
            ),
        ],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
    )
    try:
        assert evaluator.stdout is not None and evaluator.stdout.readline() == b"probed\n"
        deadline, started = time.monotonic() + 20, False
        while not started and time.monotonic() < deadline:
            time.sleep(0.02)  # bwrap, then the program's interpreter as its PID namespace's init
            started = _interpreter_among(running := _sandbox_processes_under(evaluator.pid))
    finally:
        evaluator.kill()
        evaluator.wait()
    assert started and len(running) >= 2, running
    deadline = time.monotonic() + 5
    while (alive := [pid for pid in running if _state(pid) not in ("", "Z")]) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert alive == [], "sandbox processes outlived the evaluator"


def _interpreter_among(pids: list[int]) -> bool:
    """Whether one of `pids` already runs the sandboxed interpreter (bwrap has finished setting up)."""
    return any(_read(f"/proc/{pid}/cmdline").split(b"\0")[0] == bytes(PYTHON) for pid in pids)


def _sandbox_processes_under(root: int) -> list[int]:
    """Descendants of `root` that run the sandbox (bwrap and the child interpreter carry its marker)."""
    parents = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        stat = _read(f"/proc/{pid}/stat")
        if stat:
            parents[int(pid)] = int(stat.rsplit(b")", 1)[1].split()[1])
    descendants: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - descendants
        descendants |= frontier
    return sorted(pid for pid in descendants if b"fastmath-sandbox" in _read(f"/proc/{pid}/cmdline"))


def _state(pid: int) -> str:
    """A process's state letter ('Z' for a zombie), or '' once it is gone."""
    stat = _read(f"/proc/{pid}/stat")
    return stat.rsplit(b")", 1)[1].split()[0].decode() if stat else ""
