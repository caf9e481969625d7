"""Grade math completions: find the number the model meant and compare it with the gold answer.

Public harnesses get GSM8K wrong in known ways: lm-evaluation-harness's strict match takes the
FIRST `####` (a model that recites the few-shot exemplars scores ~0), its flexible match marks
`$29.00` wrong against `29`, and "the last number" is fooled by a model that runs on into an
invented next question. Here, in order:

1. cut the completion where the model starts a new question (`truncate_at_new_question`);
2. take the last explicit answer of the strongest kind present: `\\boxed{}` > `#### N` > answer
   phrases ("The answer is N", "答案是 N", a bare "Answer: N" line);
3. otherwise take the last number in the text;
4. compare values as exact fractions (`numbers_equal`): `$1,000.00` == `1000`, `3/4` == `0.75`.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

from fastmath.errors import FastmathError
from fastmath.io import atomic_write_jsonl

_FINAL_LINES = {"en": "The answer is {}.", "zh": "答案是 {}。"}

# Full-width digits and punctuation (common in Chinese output) and look-alike signs, mapped to
# ASCII one character for one. `，` becomes `,` so `1，000` reads as a thousand; `。` stays: it
# ends a sentence, it is not a decimal point.
_CHAR_MAP = str.maketrans(
    {chr(0xFF10 + i): str(i) for i in range(10)}
    | {"．": ".", "，": ",", "：": ":", "＝": "=", "＋": "+", "／": "/", "％": "%", "＄": "$"}
    | {"−": "-", "－": "-"}
)
# Typographic thousands separators: LaTeX `1{,}000` / `1\,000`, thin and no-break spaces. A plain
# space is not one: `1 000` is too easily a list or a mixed number (`1 1/2`).
_THOUSANDS_MARK = re.compile(r"(?<=\d)(?:\{,\}|\\,|[\u00a0\u2009\u202f])(?=\d{3}(?!\d))")
_LATEX_TEXT = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox|operatorname)\s*\{([^{}]*)\}")
_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*(-?[\d,]*\.?\d+)\s*\}\s*\{\s*(-?[\d,]*\.?\d+)\s*\}")

# One number as people write it: `-5`, `$-5`, `-$5`, `$1,234.50`, `.5`, `3/4`, `1 1/2`, `¥18`.
# A `-` glued to a digit, letter or closing bracket before it is subtraction (`16-3`), not a sign.
# Commas separate thousands only in groups of three, so `3,4` in a list is two numbers.
_NUMBER = re.compile(
    r"(?P<neg>(?<![0-9A-Za-z)\]}])-)?"
    r"(?:[$¥￥€£]\s?(?P<neg2>-)?)?"
    r"(?:(?P<whole>\d+) (?=\d+/\d))?"
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?(?!\d)|\d+(?:\.\d+)?|\.\d+)"
    r"(?:\s?/\s?(?P<den>\d+(?:\.\d+)?))?"
)
_DIGIT = re.compile(r"[0-9０-９]")
# After an answer's first number, an operator and another number mean an expression (`5 + 3 = 8`).
_OPERATOR = re.compile(r"\s*(?:[-+*/×÷·xX]|\\times|\\cdot|\\div)\s*[$(]?\s*\d")
# A sentence ends at a newline, `。`, `;`, `!`, `?` or a period that is not a decimal point.
_SENTENCE_END = re.compile(r"\n|[。；;!?！？]|\.(?!\d)")
_LEADING = re.compile(r"[\s:=]*")
# What may follow the number of a bare `Answer: N` line: a short unit, no digits, no `=`.
_UNIT_TAIL = re.compile(r"[^\d=\n]{0,40}")

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
# `#### N` with the number right after it; `#### Step 1` and `#### 2. Cost` are markdown headings.
_HASHES = re.compile(r"(?<!#)####(?!#)[ \t]*")
_HEADING_AFTER_NUMBER = re.compile(r"[.:)][ \t]*\S")
# Answer phrases, in one pattern so occurrences come out in text order. `strong` takes the first
# number after it; `weak` ("Answer:", "A:", "答："), which also starts worked solutions in few-shot
# formats, counts only when the number comes first and nothing but a unit follows it.
_PHRASES = re.compile(
    r"(?P<strong>(?i:\b(?:final\s+)?answer\s+(?:is|would\s+be|will\s+be|should\s+be)\b|\bfinal\s+answer\b)"
    r"|答案\s*(?:是(?!否)|为|為|应该是|应为|應為|:))"
    r"|(?P<weak>(?i:\b(?:answer|ans|a)\s*:)|答\s*:)"
)

# A line where the model starts a new question or turn; special tokens cut wherever they are.
_NEW_QUESTION = re.compile(
    r"<\|(?:im_start|im_end|endoftext|eot_id|start_header_id)\|>|</s>"
    r"|^[ \t]*(?:#{1,4}[ \t]*)?(?:\*\*)?"
    r"(?:(?i:question|problem|q|human|user|instruction)(?:[ \t]*\d+)?|问题|题目|问)"
    r"(?:\*\*)?[ \t]*[:：]",
    re.MULTILINE,
)


def final_answer_line(value: str, lang: str) -> str:
    """The one final-answer line that SFT targets end with and the grader reads back."""
    try:
        template = _FINAL_LINES[lang]
    except KeyError:
        raise FastmathError(f"unknown language {lang!r}: expected one of {', '.join(_FINAL_LINES)}") from None
    return template.format(value.strip())


def _normalize(text: str) -> str:
    """ASCII digits and signs, no markdown bold or simple LaTeX wrappers around numbers.

    GSM8K's calculator annotations (`= <<9*2=18>>18`) stay: they only repeat a result, and a
    completion cut off right after one (`9 * 2 = <<9*2=18>>`) still ends with its value.
    """
    text = text.translate(_CHAR_MAP).replace("**", "").replace("\\$", "$").replace("\\%", "%")
    text = _THOUSANDS_MARK.sub(",", text)
    text = _LATEX_TEXT.sub(r" \1 ", text)
    return _LATEX_FRAC.sub(_frac_to_slash, text)


def _frac_to_slash(m: re.Match[str]) -> str:
    """`\\frac{3}{4}` -> `3/4`; after a digit, `2\\frac{1}{2}` -> `2 1/2`, the mixed number, not 21/2."""
    space = " " if m.string[m.start() - 1 : m.start()].isdigit() else ""
    return f"{space}{m[1]}/{m[2]}"


def _value(m: re.Match[str]) -> Fraction | None:
    """The exact value of a `_NUMBER` match; None for a zero denominator."""
    value = Fraction(m["num"].replace(",", ""))
    if m["den"] is not None:
        den = Fraction(m["den"])
        if den == 0:
            return None
        # `1 1/2` is a mixed number only when the fraction is proper; `8 16/2` is not.
        value = value / den + (int(m["whole"]) if m["whole"] is not None and value < den else 0)
    return -value if m["neg"] or m["neg2"] else value


def _canonical(x: Fraction) -> str:
    """`18`, `0.75`, `-2.5`: an exact decimal when one exists, else `p/q` (`1/3`)."""
    if x.denominator == 1:
        return str(x.numerator)
    rest, twos, fives = x.denominator, 0, 0
    while rest % 2 == 0:
        rest, twos = rest // 2, twos + 1
    while rest % 5 == 0:
        rest, fives = rest // 5, fives + 1
    if rest != 1:
        return f"{x.numerator}/{x.denominator}"
    places = max(twos, fives)
    digits = str(abs(x.numerator) * 10**places // x.denominator).rjust(places + 1, "0")
    return f"{'-' if x < 0 else ''}{digits[:-places]}.{digits[-places:]}"


def _parse(text: str) -> tuple[Fraction, int] | None:
    """The first number in `text` and how many decimal places it was written with."""
    for m in _NUMBER.finditer(_normalize(text)):
        value = _value(m)
        if value is not None:
            places = len(m["num"].partition(".")[2]) if m["den"] is None else 0
            return value, places
    return None


def numbers_equal(a: str, b: str) -> bool:
    """Whether two number strings have the same value (`18.00` == `18`, `3/4` == `0.75`).

    Exact, except that a decimal written with 4 or more places is read as a rounding: it matches
    a value within one unit of its last place (`0.3333` == `1/3`, `17.99999` == `18`). Short
    decimals stay exact, so `0.33` is not `1/3` and `18.5` is not `18`. A non-number is never equal.
    """
    x, y = _parse(a), _parse(b)
    if x is None or y is None:
        return False
    if x[0] == y[0]:
        return True
    long_places = [p for p in (x[1], y[1]) if p >= 4]
    return bool(long_places) and abs(x[0] - y[0]) <= Fraction(1, 10 ** min(long_places))


def gold_from_answer(answer: str) -> str:
    """The canonical gold number from a bare number (`1,000`) or GSM8K text ending `#### N`.

    After `####` the first number counts (the LAST `####`, as a reference may quote one earlier);
    without `####` the text must hold exactly one number, so a solution passed by mistake fails loudly.
    """
    if "####" in answer:
        parsed = _parse(answer.rsplit("####", 1)[1])
        if parsed is None:
            raise FastmathError(f"no number after the last '####' in gold answer {answer[-60:]!r}")
        return _canonical(parsed[0])
    values = [v for m in _NUMBER.finditer(_normalize(answer)) if (v := _value(m)) is not None]
    if len(values) != 1:
        what = "no number" if not values else f"{len(values)} numbers"
        raise FastmathError(f"gold answer {answer[:60]!r} has {what}: expected a number or '... #### N'")
    return _canonical(values[0])


def truncate_at_new_question(text: str) -> str:
    """`text` up to where the model starts inventing a next question, exemplar or chat turn.

    A cut only counts once the model has written some digit before it: a completion that opens
    by restating the question ("Question: ...") is kept, and so is one that never answered.
    """
    for m in _NEW_QUESTION.finditer(text):
        if _DIGIT.search(text, 0, m.start()):
            return text[: m.start()]
    return text


def _answer_value(text: str, start: int, end: int, weak: bool = False) -> Fraction | None:
    """The number an answer marker ending at `start` points to, looking no further than `end`.

    The first number after the marker counts, except in an expression (`5 + 3 = 8`), where the
    number after the last `=` does. A weak marker needs the number first and then at most a unit.
    """
    start = _LEADING.match(text, start, end).end()
    first = _NUMBER.search(text, start, end)
    if first is None:
        return None
    if weak and (first.start() != start or not _UNIT_TAIL.fullmatch(text, first.end(), end)):
        return None
    if _OPERATOR.match(text, first.end(), end):
        equals = text.rfind("=", first.end(), end)
        after = _NUMBER.search(text, equals + 1, end) if equals >= 0 else None
        if after is not None:
            return _value(after)
    return _value(first)


def _sentence_end(text: str, start: int) -> int:
    """Where the sentence an answer phrase opens ends; a decimal point does not end it."""
    start = _LEADING.match(text, start).end()
    m = _SENTENCE_END.search(text, start)
    return m.start() if m else len(text)


def _boxed_answers(text: str) -> list[Fraction | None]:
    """Values of every `\\boxed{...}`, braces matched so `\\boxed{18 \\text{ dollars}}` is whole."""
    values = []
    for m in _BOXED.finditer(text):
        depth, end = 1, m.end()
        while end < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            end += 1
        values.append(_answer_value(text, m.end(), end - 1 if depth == 0 else end))
    return values


def _hash_answers(text: str) -> list[Fraction | None]:
    """Values of every `#### N`; None for a markdown heading (`#### Step 1`, `#### 2. Cost`)."""
    values = []
    for m in _HASHES.finditer(text):
        number = _NUMBER.match(text, m.end())
        heading = number is None or _HEADING_AFTER_NUMBER.match(text, number.end())
        values.append(None if heading else _value(number))
    return values


def _phrase_answers(text: str) -> list[Fraction | None]:
    """Values of every answer phrase, strong and weak, in text order."""
    return [
        _answer_value(text, m.end(), _sentence_end(text, m.end()), weak=m["weak"] is not None)
        for m in _PHRASES.finditer(text)
    ]


def extract_answer(completion: str) -> str | None:
    """The canonical number the model gave as its answer, or None when it gave no number at all."""
    text = _normalize(truncate_at_new_question(completion))
    for answers in (_boxed_answers, _hash_answers, _phrase_answers):
        found = [v for v in answers(text) if v is not None]
        if found:
            return _canonical(found[-1])
    numbers = [v for m in _NUMBER.finditer(text) if (v := _value(m)) is not None]
    return _canonical(numbers[-1]) if numbers else None


Outcome = Literal["correct", "wrong", "none"]


@dataclass(frozen=True)
class Grade:
    pred: str | None  # canonical number the model gave, None when it gave none
    outcome: Outcome


def grade(completion: str, gold: str) -> Grade:
    """Grade one completion against a gold answer (bare number or GSM8K `... #### N` text)."""
    pred = extract_answer(completion)
    if pred is None:
        return Grade(None, "none")
    return Grade(pred, "correct" if numbers_equal(pred, gold_from_answer(gold)) else "wrong")


def grade_file(input_path: str | Path, output_path: str | Path) -> dict[str, int | float]:
    """Grade every line of a JSONL file of `completion`/`answer` records, adding `pred` and `outcome`.

    Lines are read here rather than through `io.read_jsonl`: errors must name the line, and a torn
    last line must stop the grading instead of silently shrinking `n`. Everything is checked
    before the output is written, atomically, so a bad line leaves no partial file behind.
    """
    path = Path(input_path)
    if not path.is_file():
        raise FastmathError(f"{path}: no such file")
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise FastmathError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    rows: list[dict] = []
    counts: Counter[str] = Counter()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}, line {lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise FastmathError(f"{where}: invalid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise FastmathError(f"{where}: expected a JSON object with 'completion' and 'answer'")
        key = "gold" if "answer" not in row and "gold" in row else "answer"  # fastmath's eval files say `gold`
        missing = [k for k in ("completion", key) if k not in row]
        if missing:
            raise FastmathError(f"{where}: missing field {' and '.join(map(repr, missing))}")
        completion, answer = row["completion"], row[key]
        if not isinstance(completion, str):
            raise FastmathError(f"{where}: 'completion' must be text, got {type(completion).__name__}")
        if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
            raise FastmathError(f"{where}: 'answer' must be number or text, got {type(answer).__name__}")
        try:
            result = grade(completion, str(answer))
        except FastmathError as e:
            raise FastmathError(f"{where}: {e}") from None
        rows.append({**row, "pred": result.pred, "outcome": result.outcome})
        counts[result.outcome] += 1
    atomic_write_jsonl(output_path, rows)
    n = len(rows)
    summary = {"n": n, "correct": counts["correct"], "wrong": counts["wrong"], "none": counts["none"]}
    return summary | {"accuracy": counts["correct"] / n if n else 0.0}


def main(inv) -> int:
    """`python -m fastmath grade FILE.jsonl [--output OUT.jsonl]`: re-grade saved completions."""
    output = inv.args.output or inv.args.input.with_suffix(".graded.jsonl")
    s = grade_file(inv.args.input, output)
    counts = f"({s['correct']}/{s['n']})  wrong {s['wrong']}  no answer {s['none']}"
    print(f"accuracy {100 * s['accuracy']:.2f}% {counts}")
    print(f"wrote {output}")
    return 0
