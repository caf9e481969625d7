"""Small commands over library code: `grade` (re-grade saved completions, `grading`) and `sandbox`
(run a program as program-of-thought does, `eval.sandbox`). The library modules stay free of
command-line handling; `cli` names these functions as the commands' targets."""

from __future__ import annotations

import json
from pathlib import Path

from fastmath.errors import FastmathError


def grade(inv) -> int:
    """`python -m fastmath grade FILE.jsonl [--output OUT.jsonl]`: re-grade saved completions."""
    from fastmath.grading import grade_file

    output = inv.args.output or inv.args.input.with_suffix(".graded.jsonl")
    s = grade_file(inv.args.input, output)
    counts = f"({s['correct']}/{s['n']})  wrong {s['wrong']}  no answer {s['none']}"
    print(f"accuracy {100 * s['accuracy']:.2f}% {counts}")
    print(f"wrote {output}")
    return 0


def sandbox(inv) -> int:
    """`python -m fastmath sandbox PROGRAM.py`: run a program file as PoT runs one, print JSON.

    Exit status 0 when the program ran cleanly, 1 when it failed (the JSON says why).
    """
    from fastmath.eval.sandbox import run_program

    args = inv.args
    result = run_program(
        _read_program(args.program),
        timeout_s=args.timeout,
        memory_mb=args.memory_mb,
        allow_unsafe=args.unsafe_no_os_sandbox,
    )
    shown = {"ok": result.ok, "answer": result.answer, "stdout": result.stdout, "error": result.error,
             "isolation": result.isolation, "limits": list(result.limits)}  # fmt: skip
    print(json.dumps(shown, ensure_ascii=False, indent=2))
    return 0 if result.ok else 1


def _read_program(path: Path) -> str:
    """The program file's text, or a FastmathError that names the file and the problem."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FastmathError(f"program file {path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise FastmathError(f"program file {path} is not UTF-8 text (byte {exc.start}): save it as UTF-8") from None
    except OSError as exc:
        raise FastmathError(f"cannot read program file {path}: {exc.strerror or exc}") from None
