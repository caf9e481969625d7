"""Preference pairs (`prompt|question`, `chosen`, `rejected`) from JSON or JSONL, validated.

Invalid records are counted and reported by line, as for SFT data, so one bad pair in a
mined file of thousands does not stop a run; a file with no usable pair is an error.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path

from fastmath import resources
from fastmath.data import BadRecord, read_records, report_bad
from fastmath.errors import FastmathError
from fastmath.log import log
from fastmath.prompts import detect_language


@dataclass
class Pair:
    prompt: str  # the question; the chat prompt is built from it like SFT's
    chosen: str
    rejected: str
    lang: str


def _check(r: object) -> str | None:
    """Why the record is unusable, or None."""
    if isinstance(r, str):
        return r
    if not isinstance(r, dict):
        return "not an object"
    missing = [k for k in ("chosen", "rejected") if k not in r]
    if "prompt" not in r and "question" not in r:
        missing.insert(0, "prompt")
    if missing:
        return f"missing field {', '.join(map(repr, missing))}"
    fields = [str(r.get("prompt", r.get("question"))).strip(), str(r["chosen"]).strip(), str(r["rejected"]).strip()]
    empty = [name for name, value in zip(("prompt", "chosen", "rejected"), fields, strict=True) if not value]
    if empty:
        return f"empty {', '.join(empty)}"
    if fields[1] == fields[2]:
        return "chosen == rejected"
    return None


def load_pairs(path: str | Path, verbose: bool = True) -> list[Pair]:
    path = Path(resources.resolve(str(path)))
    if not path.is_file():
        raise FastmathError(f"preference file {str(path)!r} not found; run `make pairs` or set dpo.pairs")
    pairs, bad = [], []
    for where, r in read_records(path):
        why = _check(r)
        if why:
            bad.append(BadRecord(where, why))
            continue
        r = typing.cast(dict, r)  # _check refused anything that is not an object
        prompt = str(r.get("prompt", r.get("question"))).strip()
        pairs.append(Pair(prompt, str(r["chosen"]).strip(), str(r["rejected"]).strip(), detect_language(prompt)))
    if bad and verbose:
        log.warning(report_bad(str(path), bad))
    if not pairs:
        detail = f" ({report_bad(str(path), bad)})" if bad else ""
        raise FastmathError(f"no usable preference pairs in {path}{detail}")
    return pairs
