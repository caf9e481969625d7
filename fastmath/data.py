"""Math problems from the hub or local files, cleaned into one shape.

Sources: GSM8K on the hub (`openai/gsm8k`, config `main`) or any hub dataset with
`question`/`answer` columns; local `.jsonl` (GSM8K's format), `.json` (a list of
`{"question", "answer"}`, the seed project's format) and `.tsv` (MGSM: `question<TAB>number`).
Bad records are counted and reported by file and line rather than crashing a long run, and a
source with no usable record is an error.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

from fastmath import hub, resources
from fastmath.errors import FastmathError
from fastmath.grading import final_answer_line, gold_from_answer
from fastmath.log import log
from fastmath.prompts import detect_language

CALCULATOR = re.compile(r"<<[^>]*>>")


@dataclass
class Problem:
    id: str
    question: str
    reference: str  # the source's answer text: a worked solution ending `#### N`, or a bare number
    gold: str  # canonical final number
    lang: str

    def target(self, keep_calculator: bool = False) -> str:
        """The SFT target: the worked steps, then one final-answer line the grader parses back."""
        steps = self.reference.rsplit("####", 1)[0] if "####" in self.reference else ""
        if not keep_calculator:
            steps = CALCULATOR.sub("", steps)
        steps = steps.strip()
        final = final_answer_line(self.gold, self.lang)
        return f"{steps}\n{final}" if steps else final


@dataclass
class BadRecord:
    where: str  # "line 12" or "record 3"
    why: str


def read_text(path: Path, what: str = "data file") -> str:
    """A data file's text; a binary, unreadable or non-UTF-8 file is a short error naming it."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise FastmathError(f"cannot read {what} {path}: {e.strerror}; check its permissions") from None
    if b"\x00" in raw[:8192]:
        raise FastmathError(f"{what} {path} is binary, not text; give a .jsonl/.json/.tsv text file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FastmathError(f"{what} {path} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None


def read_records(path: Path) -> list[tuple[str, object]]:
    """(location, raw record) pairs from .jsonl/.json/.tsv; unparseable lines become the reason, reported later."""
    if path.suffix not in (".jsonl", ".json", ".tsv"):
        raise FastmathError(f"unsupported data file {path}: use .jsonl, .json (a list) or .tsv (question<TAB>answer)")
    text = read_text(path)
    if path.suffix == ".jsonl":
        rows: list[tuple[str, object]] = []
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append((f"line {i}", json.loads(line)))
                except json.JSONDecodeError as e:
                    rows.append((f"line {i}", f"invalid JSON ({e.msg})"))
        return rows
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise FastmathError(f"{path} is not valid JSON (line {e.lineno}: {e.msg})") from None
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise FastmathError(f"{path} must hold a JSON list of records (objects)")
        return [(f"record {i}", r) for i, r in enumerate(data, 1)]
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    return [
        (f"line {i}", {"question": r[0], "answer": r[1]} if len(r) >= 2 else "fewer than 2 columns")
        for i, r in enumerate(reader, 1)
        if r
    ]


def _clean(rows: list[tuple[str, object]], source: str, language: str) -> tuple[list[Problem], list[BadRecord]]:
    problems, bad = [], []
    for where, r in rows:
        if isinstance(r, str):
            bad.append(BadRecord(where, r))
            continue
        if not isinstance(r, dict):
            bad.append(BadRecord(where, "not an object"))
            continue
        missing = [k for k in ("question", "answer") if k not in r]
        if missing:
            bad.append(BadRecord(where, f"missing field {', '.join(map(repr, missing))}"))
            continue
        question, answer = str(r["question"]).strip(), str(r["answer"]).strip()
        if not question or not answer:
            bad.append(BadRecord(where, "empty question" if not question else "empty answer"))
            continue
        try:
            gold = gold_from_answer(answer)
        except FastmathError:
            bad.append(BadRecord(where, "no final number in the answer"))
            continue
        lang = detect_language(question) if language == "auto" else language
        problems.append(Problem(str(r.get("id", f"{source}:{where.split()[-1]}")), question, answer, gold, lang))
    return problems, bad


def report_bad(source: str, bad: list[BadRecord], shown: int = 5) -> str:
    head = "; ".join(f"{b.where}: {b.why}" for b in bad[:shown])
    more = f"; and {len(bad) - shown} more" if len(bad) > shown else ""
    return f"skipped {len(bad)} bad record(s) in {source}: {head}{more}"


def load_problems(
    source: str,
    split: str = "train",
    subset: str | None = "main",
    limit: int | None = None,
    language: str = "auto",
    verbose: bool = True,
) -> list[Problem]:
    """Load and clean problems from a local file (or one shipped: `fastmath:samples/...`) or a hub dataset."""
    source = resources.resolve(source)
    path = Path(source).expanduser()
    if path.suffix in hub.DATA_SUFFIXES or path.exists():
        if not path.is_file():
            raise FastmathError(f"data file {source!r} not found; check data.train in the recipe")
        rows = read_records(path)
    else:
        name = hub.resolve(source, "dataset")  # before importing datasets: fail fast
        from datasets import load_dataset

        ds = load_dataset(name, subset, split=split)
        rows = [(f"row {i}", dict(r)) for i, r in enumerate(ds, 1)]
    problems, bad = _clean(rows, Path(source).name, language)
    if bad and verbose:
        log.warning(report_bad(source, bad))
    if not problems:
        detail = f" ({report_bad(source, bad)})" if bad else ""
        raise FastmathError(f"no usable records in {source}{detail}; each needs 'question' and 'answer'")
    return problems[:limit] if limit else problems
