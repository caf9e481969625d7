"""Math problems from the hub or local files, cleaned into one shape.

Sources: any hub dataset, or a local `.jsonl` (GSM8K's format), `.json` (a list of records,
the seed project's format), `.csv` (with a header row), `.parquet` or `.tsv` (MGSM:
`question<TAB>number`, no header). The question and answer are read from the fields a `Fields`
names (`question`/`answer` unless told: `--question-field`, `data.question_field`, a task's
YAML); the answer is a worked solution ending `#### N` or a bare gold (`gold_from_answer` lists
the forms). Bad records, an unreadable gold among them, are counted and reported by file and
line rather than crashing a long run, and a source with no usable record is an error.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastmath import hub, resources
from fastmath.errors import FastmathError
from fastmath.grading import final_answer_line, gold_from_answer, gold_text
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
    group: str | None = None  # the task's breakdown label (CMATH: the school grade), if it has one
    tolerance: float = 0.0  # the task's grading tolerance (`grading.numbers_equal`): GSM-Hard's float golds

    def target(self, keep_calculator: bool = False) -> str:
        """The SFT target: the worked steps, then one final-answer line the grader parses back."""
        steps = self.reference.rsplit("####", 1)[0] if "####" in self.reference else ""
        if not keep_calculator:
            steps = CALCULATOR.sub("", steps)
        steps = steps.strip()
        final = final_answer_line(self.gold, self.lang)
        return f"{steps}\n{final}" if steps else final


@dataclass(frozen=True)
class Fields:
    """Which fields of a record hold what: the question (several are joined with a space, as SVAMP's
    `Body` + `Question`), the answer, and an optional breakdown label."""

    question: tuple[str, ...] = ("question",)
    answer: str = "answer"
    group: str | None = None

    @classmethod
    def named(cls, question: str | list[str] | tuple[str, ...], answer: str, group: str | None = None) -> Fields:
        return cls((question,) if isinstance(question, str) else tuple(question), answer, group)

    def names(self) -> list[str]:
        return [*self.question, self.answer]


FILE_KINDS = ".jsonl, .json (a list), .csv, .parquet or .tsv (question<TAB>answer)"


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


def read_records(path: Path, fields: Fields = Fields()) -> list[tuple[str, object]]:
    """(location, raw record) pairs from a data file; unparseable lines become the reason, reported later."""
    if path.suffix not in hub.DATA_SUFFIXES:
        raise FastmathError(f"unsupported data file {path}: use {FILE_KINDS}")
    if path.suffix == ".parquet":
        return _read_parquet(path)
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
    if path.suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        return [(f"line {reader.line_num}", dict(r)) for r in reader]  # line_num counts the header as line 1
    reader_tsv = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    columns = [*fields.question[:1], fields.answer]  # MGSM's two columns, under the names asked for
    return [
        (f"line {i}", dict(zip(columns, r[:2], strict=True)) if len(r) >= 2 else "fewer than 2 columns")
        for i, r in enumerate(reader_tsv, 1)
        if r
    ]


def _read_parquet(path: Path) -> list[tuple[str, object]]:
    import pyarrow.parquet as pq  # a dependency of datasets

    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise FastmathError(f"{path} is not a readable Parquet file ({e}); check the file") from None
    return [(f"row {i}", r) for i, r in enumerate(table.to_pylist(), 1)]


def _text(value: Any) -> str:
    """A field's value as text; a number as `gold_text` writes it (GSM-Hard's float golds as written)."""
    return gold_text(value) if isinstance(value, (int, float)) else str(value)


def _clean(
    rows: list[tuple[str, object]], source: str, language: str, fields: Fields
) -> tuple[list[Problem], list[BadRecord]]:
    problems, bad = [], []
    for where, r in rows:
        if isinstance(r, str):
            bad.append(BadRecord(where, r))
            continue
        if not isinstance(r, dict):
            bad.append(BadRecord(where, "not an object"))
            continue
        missing = [k for k in fields.names() if r.get(k) is None]
        if missing:
            bad.append(BadRecord(where, f"missing field {', '.join(map(repr, missing))}"))
            continue
        question = " ".join(str(r[k]).strip() for k in fields.question).strip()
        answer = _text(r[fields.answer]).strip()
        if not question or not answer:
            bad.append(BadRecord(where, "empty question" if not question else "empty answer"))
            continue
        try:
            gold = gold_from_answer(answer)
        except FastmathError:
            bad.append(BadRecord(where, f"unreadable gold answer {answer[-40:]!r}"))
            continue
        lang = detect_language(question) if language == "auto" else language
        group = None if fields.group is None or r.get(fields.group) is None else str(r[fields.group])
        pid = str(r.get("id", f"{source}:{where.split()[-1]}"))
        problems.append(Problem(pid, question, answer, gold, lang, group))
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
    fields: Fields = Fields(),
) -> list[Problem]:
    """Load and clean problems from a local file (or one shipped: `fastmath:samples/...`) or a hub dataset."""
    source = resources.resolve(source)
    path = Path(source).expanduser()
    if path.suffix in hub.DATA_SUFFIXES or path.exists():
        if not path.is_file():
            raise FastmathError(f"data file {source!r} not found; check data.train in the recipe")
        rows = read_records(path, fields)
    else:
        name = hub.resolve(source, "dataset")  # before importing datasets: fail fast
        from datasets import load_dataset

        ds = load_dataset(name, subset, split=split)
        rows = [(f"row {i}", dict(r)) for i, r in enumerate(ds, 1)]
    problems, bad = _clean(rows, Path(source).name, language, fields)
    if bad and verbose:
        log.warning(report_bad(source, bad))
    if not problems:
        detail = f" ({report_bad(source, bad)})" if bad else ""
        named = " and ".join(repr(k) for k in fields.names())
        raise FastmathError(
            f"no usable records in {source}{detail}; each needs {named} "
            "(name other fields with --question-field/--answer-field or data.question_field/answer_field)"
        )
    return problems[:limit] if limit else problems
