"""The program-of-thought sandbox, tested by really running hostile programs.

Every hostile program must fail (ok False, answer None), so the evaluator grades it wrong, and must
leave no trace outside the sandbox.
"""

from __future__ import annotations

import resource
import select
import signal
import socket
import time
from pathlib import Path

import pytest

from fastmath.eval.sandbox import SandboxResult, extract_program, program_answer, run_program

# Reaches the already-loaded `os` module without importing it, as an attacker would: this passes the
# import guard, so these cases exercise the audit hook.
ESCAPE_OS = (
    "wrap = next(c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close')\n"
    "os = wrap.__init__.__globals__\n"
)
# Reaches the real __import__ (not the guarded one) through a stdlib function's globals.
ESCAPE_IMPORT = ESCAPE_OS + "imp = os['__builtins__']['__import__']\n"


def fenced(code: str) -> str:
    return f"Let me compute this.\n```python\n{code}\n```\nThe program prints the answer."


def assert_refused(result: SandboxResult | None, reason: str = "forbidden") -> None:
    """A refused program fails with the reason and has no answer, so it is graded wrong."""
    assert result is not None
    assert not result.ok
    assert result.error is not None and result.error.startswith(reason), result.error
    assert result.answer is None


def test_correct_program_prints_42() -> None:
    answer, result = program_answer(fenced("apples = 6\nboxes = 7\nprint(apples * boxes)"))
    assert answer == "42"
    assert result is not None and result.ok and result.error is None


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
    "bomb",
    ["import os\nwhile True:\n    os.fork()", ESCAPE_OS + "while True:\n    os['fork']()"],
)
def test_fork_bomb_is_harmless(bomb: str) -> None:
    start = time.monotonic()
    assert_refused(run_program(bomb, timeout_s=2.0))
    assert time.monotonic() - start < 2.0 + 3.0


@pytest.mark.parametrize("alloc", ["x = bytearray(10**10)", "x = [0] * 10**10"])
def test_huge_allocation_hits_the_memory_limit(alloc: str) -> None:
    own_limit = resource.getrlimit(resource.RLIMIT_AS)
    answer, result = program_answer(fenced(alloc + "\nprint(len(x))"), memory_mb=256)
    assert_refused(result, "memory limit")
    assert answer is None
    assert resource.getrlimit(resource.RLIMIT_AS) == own_limit  # the limit was the child's alone
    assert run_program("print(6 * 7)").answer == "42"


@pytest.mark.parametrize(
    "attack",
    [
        "fd = os['pidfd_open'](os['getppid']())\nos['sys'].modules['_signal'].pidfd_send_signal(fd, SIGNAL)",
        "os['kill'](os['getppid'](), SIGNAL)",
        "boot = os['sys'].modules['_frozen_importlib']\n"
        "importer = boot.BuiltinImporter\n"
        "fresh = lambda name: importer.create_module(boot.ModuleSpec(name, importer))\n"
        "fd = fresh('posix').pidfd_open(os['getppid']())\n"
        "fresh('_signal').pidfd_send_signal(fd, SIGNAL)",
    ],
)
def test_cannot_signal_the_evaluator(attack: str) -> None:
    """The child may run as our own user; pidfd signals raise no audit event, so they are removed."""
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


def test_working_directory_is_temporary_and_removed() -> None:
    result = run_program(ESCAPE_OS + "print(os['getcwd']())")
    assert result.ok, result.error
    cwd = Path(result.stdout.strip())
    assert cwd.name.startswith("fastmath-sandbox-")
    assert not cwd.exists()
