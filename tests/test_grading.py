"""Grading: expectations are what a careful human grader would say, written by hand.

The case table (`grading_cases.jsonl`) covers the ways public harnesses mis-grade GSM8K (first
`####`, `$29.00` vs 29, a run-on invented question fooling "last number"), English and Chinese
answer formats, numbers in words, lists that are no single answer, and no-answer completions.
The reference-solution tests then check the grader against GSM8K's and MGSM's own gold answers.
Completions are untrusted text, so the last sections check that grading never raises (numbers of
thousands of digits) and stays linear in the completion's length, measured as time ratios.
"""

from __future__ import annotations

import gc
import json
import math
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fastmath.errors import FastmathError
from fastmath.grading import (
    Grade,
    extract_answer,
    final_answer_line,
    gold_from_answer,
    grade,
    grade_file,
    numbers_equal,
    truncate_at_new_question,
)

from .conftest import GSM8K_TEST, MGSM_ZH, REPO, require_shared

CASES_FILE = Path(__file__).with_name("grading_cases.jsonl")
CALCULATOR = re.compile(r"<<[^>]*>>")


def _load_cases() -> list[dict]:
    """The hand-written table: one case per line, `id`, `completion`, `gold`, `pred`, `outcome`, `note`."""
    lines = CASES_FILE.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


CASES = _load_cases()


def test_case_table_is_large_and_well_formed() -> None:
    required = {"id", "completion", "gold", "pred", "outcome"}
    ids = [case["id"] for case in CASES]
    assert len(ids) >= 200
    assert len(set(ids)) == len(ids), sorted({i for i in ids if ids.count(i) > 1})
    for case in CASES:
        assert required <= set(case) <= required | {"note"}, case["id"]
        assert case["outcome"] in ("correct", "wrong", "none"), case["id"]
        assert (case["pred"] is None) == (case["outcome"] == "none"), case["id"]


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_grade_table(case: dict) -> None:
    assert grade(case["completion"], case["gold"]) == Grade(case["pred"], case["outcome"])


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ("18", "18", True),
        ("18.00", "18", True),
        ("3/4", "0.75", True),
        ("-3/4", "-0.75", True),
        ("1,000", "1000", True),
        ("$29.00", "29", True),
        ("50%", "50", True),
        ("0.3333", "1/3", True),  # 4+ decimal places: a rounding of 1/3
        ("0.33", "1/3", False),  # short decimals stay exact
        ("17.999999", "18", True),
        ("18.5", "18", False),
        ("-5", "5", False),
        ("0.5", ".5", True),
        ("2/3", "0.6667", True),
        ("2/3", "0.6", False),
        ("abc", "1", False),
        ("", "", False),
    ],
)
def test_numbers_equal(a: str, b: str, equal: bool) -> None:
    assert numbers_equal(a, b) is equal
    assert numbers_equal(b, a) is equal


@pytest.mark.parametrize(
    ("answer", "gold"),
    [
        ("72", "72"),
        ("1,000", "1000"),
        ("-10", "-10"),
        ("0.5", "0.5"),
        ("3/4", "0.75"),
        (" 18 \n", "18"),
        ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72", "72"),
        ("So 2000 + 125 = 2,125\n#### 2,125", "2125"),
        ("quoting #### 5 first\nthen the real one\n#### 7", "7"),
        ("####  $1,080 ", "1080"),
    ],
)
def test_gold_from_answer(answer: str, gold: str) -> None:
    assert gold_from_answer(answer) == gold


@pytest.mark.parametrize("answer", ["", "unknown", "#### ", "Natalia sold 48/2 = 24 clips", "3,4"])
def test_gold_from_answer_rejects_text_without_one_number(answer: str) -> None:
    with pytest.raises(FastmathError):
        gold_from_answer(answer)


def test_final_answer_line() -> None:
    assert final_answer_line("72", "en") == "The answer is 72."
    assert final_answer_line("72", "zh") == "答案是 72。"
    assert final_answer_line(" 1,000 ", "en") == "The answer is 1,000."
    with pytest.raises(FastmathError, match="fr"):
        final_answer_line("72", "fr")


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("The answer is 18.\n\nQuestion: What is 2+2?", "The answer is 18.\n\n"),
        ("The answer is 18.\nQ: 2+2?", "The answer is 18.\n"),
        ("The answer is 18.\n\nQ: 2+2?", "The answer is 18.\n\n"),
        ("18 dollars\nProblem 2: ...", "18 dollars\n"),
        ("答案是 18。\n问题：……", "答案是 18。\n"),
        ("答案是 18。\n题目：……", "答案是 18。\n"),
        ("18\nHuman: hi", "18\n"),
        ("18\nUser: hi", "18\n"),
        ("18<|im_start|>user", "18"),
        ("18<|im_end|>", "18"),
        ("Question: Janet has 16 eggs?\nShe has 18.", "Question: Janet has 16 eggs?\nShe has 18."),
        ("Let me think.\nQuestion: what next?\nIt is 18.", "Let me think.\nQuestion: what next?\nIt is 18."),
        ("She asked the question: why 18?", "She asked the question: why 18?"),
        ("No marker at all: 18", "No marker at all: 18"),
        ("", ""),
        # an answer in words counts as having answered; a restated question before it is kept
        ("The answer is five.\n\nQuestion: What is 2+2?", "The answer is five.\n\n"),
        ("答案是十八。\n问题：……", "答案是十八。\n"),
        (
            "Question: Tom has five pens.\nThe answer is five.\nQ: next?",
            "Question: Tom has five pens.\nThe answer is five.\n",
        ),
        ("Question: Tom has five pens.\nQuestion: and then?", "Question: Tom has five pens.\nQuestion: and then?"),
    ],
)
def test_truncate_at_new_question(text: str, kept: str) -> None:
    assert truncate_at_new_question(text) == kept


@pytest.mark.parametrize(
    ("completion", "pred"),
    [
        ("The answer is 18.", "18"),
        ("The answer is 0.750", "0.75"),
        ("The answer is 1/3", "1/3"),
        ("The answer is 6/9", "2/3"),
        ("The answer is -0", "0"),
        ("The answer is 007", "7"),
        ("The answer is 1/8", "0.125"),
        ("Nothing here.", None),
    ],
)
def test_extract_answer_canonical_form(completion: str, pred: str | None) -> None:
    assert extract_answer(completion) == pred


def _gsm8k_rows() -> list[dict]:
    require_shared(GSM8K_TEST)
    return [json.loads(line) for line in GSM8K_TEST.read_text(encoding="utf-8").splitlines() if line.strip()]


def _solution_variants(answer: str) -> dict[str, str]:
    """A reference solution with and without calculator annotations, ending `#### N` or the final line."""
    steps, _, number = answer.rpartition("####")
    with_final_line = f"{steps.rstrip()}\n{final_answer_line(number.strip(), 'en')}"
    return {
        "hash": answer,
        "hash-no-calculator": CALCULATOR.sub("", answer),
        "final-line": with_final_line,
        "final-line-no-calculator": CALCULATOR.sub("", with_final_line),
    }


def test_every_gsm8k_reference_solution_grades_correct() -> None:
    rows = _gsm8k_rows()
    assert len(rows) == 1319
    failures = []
    for i, row in enumerate(rows):
        for variant, completion in _solution_variants(row["answer"]).items():
            result = grade(completion, row["answer"])
            if result.outcome != "correct":
                failures.append((i, variant, result, completion[-120:]))
    assert not failures, failures[:5]


def test_every_mgsm_zh_gold_parses_and_its_final_line_grades_correct() -> None:
    require_shared(MGSM_ZH)
    rows = [line.split("\t") for line in MGSM_ZH.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(rows) == 250
    assert all(len(row) == 2 for row in rows), "expected question<TAB>answer, no header"
    for question, answer in rows:
        gold = gold_from_answer(answer)
        assert numbers_equal(gold, answer), (answer, gold)
        assert grade(final_answer_line(gold, "zh"), answer) == Grade(gold, "correct")
        # the question's own numbers come before the answer line and must not win
        assert grade(f"{question}\n{final_answer_line(gold, 'zh')}", answer) == Grade(gold, "correct")


# --- grade_file and the CLI ---------------------------------------------------------------------------


def _run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fastmath", "grade", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _graded_rows() -> list[dict]:
    """300 lines, 100 per outcome by construction: `{i}` correct, `{i}+1` wrong, no digit = none."""
    rows: list[dict] = []
    for i in range(100):
        worked = f"{i + 1} - 1 = {i}\nThe answer is {i}."
        rows.append({"id": f"c{i}", "completion": worked, "answer": f"#### {i}"})
        rows.append({"id": f"w{i}", "completion": f"The answer is ${i + 1}.00", "answer": str(i)})
        rows.append({"id": f"n{i}", "completion": "I am not sure how to solve this.", "answer": i})
    return rows


def test_grade_file_counts_and_fields(tmp_path: Path) -> None:
    src, out = tmp_path / "completions.jsonl", tmp_path / "out" / "graded.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in _graded_rows()) + "\n", encoding="utf-8")
    summary = grade_file(src, out)
    assert summary == {"n": 300, "correct": 100, "wrong": 100, "none": 100, "accuracy": 100 / 300}
    graded = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in graded] == [r["id"] for r in _graded_rows()]
    by_id = {r["id"]: r for r in graded}
    assert by_id["c7"]["pred"] == "7" and by_id["c7"]["outcome"] == "correct"
    assert by_id["w7"]["pred"] == "8" and by_id["w7"]["outcome"] == "wrong"
    assert by_id["n7"]["pred"] is None and by_id["n7"]["outcome"] == "none"
    assert by_id["w7"]["completion"] == "The answer is $8.00"  # input fields kept as they were


def test_cli_grades_a_file(tmp_path: Path) -> None:
    src = tmp_path / "run.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in _graded_rows()), encoding="utf-8")
    proc = _run_cli(src)
    assert proc.returncode == 0, proc.stderr
    default_out = tmp_path / "run.graded.jsonl"
    assert "accuracy 33.33% (100/300)  wrong 100  no answer 100" in proc.stdout
    assert f"wrote {default_out}" in proc.stdout
    graded = [json.loads(line) for line in default_out.read_text(encoding="utf-8").splitlines()]
    assert len(graded) == 300
    assert all({"pred", "outcome", "completion", "answer", "id"} <= set(r) for r in graded)
    assert sum(r["outcome"] == "correct" for r in graded) == 100

    out = tmp_path / "elsewhere.jsonl"
    proc = _run_cli(src, "--output", out)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stdout and out.is_file()


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"completion": "The answer is 5."', "invalid JSON"),
        ('{"completion": "The answer is 5."}', "missing field 'answer'"),
        ('{"answer": "5"}', "missing field 'completion'"),
        ('["not", "an", "object"]', "JSON object"),
        ('{"completion": null, "answer": "5"}', "'completion' must be text"),
        ('{"completion": "5", "answer": "no number here"}', "gold answer"),
        ('{"completion": "5", "answer": 1e99999}', "out of range"),
    ],
)
def test_cli_bad_line_fails_without_writing(tmp_path: Path, bad_line: str, message: str) -> None:
    good = [json.dumps(r) for r in _graded_rows()[:250]]
    src, out = tmp_path / "run.jsonl", tmp_path / "graded.jsonl"
    src.write_text("\n".join([*good[:200], bad_line, *good[200:]]) + "\n", encoding="utf-8")
    out.write_text("previous results\n", encoding="utf-8")
    proc = _run_cli(src, "--output", out)
    assert proc.returncode == 2
    assert f"{src}, line 201" in proc.stderr and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert out.read_text(encoding="utf-8") == "previous results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["graded.jsonl", "run.jsonl"]  # no temp file left


def test_cli_missing_file(tmp_path: Path) -> None:
    proc = _run_cli(tmp_path / "nope.jsonl")
    assert proc.returncode == 2
    assert "nope.jsonl" in proc.stderr and "no such file" in proc.stderr


# --- numbers too long for Python's int/str limit --------------------------------------------------------

BIG = "1" + "0" * 5000  # 5,001 digits: past the interpreter's default 4,300-digit int/str limit
HUGE = "9" * 50_000


@pytest.mark.parametrize(
    ("completion", "gold", "expected"),
    [
        (f"The answer is {BIG}.", BIG, Grade(BIG, "correct")),
        (f"The answer is {BIG}.", f"#### {BIG}", Grade(BIG, "correct")),
        (f"\\boxed{{{BIG}}}", BIG[:-1] + "1", Grade(BIG, "wrong")),
        (f"The answer is {HUGE}.", HUGE, Grade(HUGE, "correct")),
        (f"The answer is {HUGE}.", HUGE[:-1] + "8", Grade(HUGE, "wrong")),
        (f"#### 000{HUGE}.000", HUGE, Grade(HUGE, "correct")),  # padding zeros do not count
        (f"The answer is -{HUGE}.", HUGE, Grade(f"-{HUGE}", "wrong")),
        ("The answer is 18.", BIG, Grade("18", "wrong")),
        (f"The answer is {BIG}.", "18", Grade(BIG, "wrong")),
        (f"print('1' + '0' * 5000) gives {BIG}", BIG, Grade(BIG, "correct")),  # a PoT program's output
        (f"The answer is 0.{'3' * 5000}.", "1/3", Grade(f"0.{'3' * 5000}", "wrong")),  # as written, no rounding
        (f"The answer is {BIG}/{BIG}0.", f"{BIG}/{BIG}0", Grade(f"{BIG}/{BIG}0", "correct")),
        (f"The answer is 1/{'0' * 5000}.", "1", Grade(None, "none")),  # a zero denominator is no number
    ],
    ids=[
        "5001-equal",
        "5001-gold-hash",
        "5001-boxed-not-equal",
        "50000-equal",
        "50000-not-equal",
        "50000-padded",
        "50000-negative",
        "small-vs-big-gold",
        "big-vs-small-gold",
        "pot-output",
        "long-decimal-exact",
        "big-fraction-as-written",
        "big-zero-denominator",
    ],
)
def test_huge_numbers_grade_without_raising(completion: str, gold: str, expected: Grade) -> None:
    assert grade(completion, gold) == expected


def test_huge_numbers_compare_and_parse() -> None:
    thousands = "1" + ",000" * 2000  # 6,001 digits in groups of three
    assert numbers_equal(f"${BIG}.00", BIG) and numbers_equal(thousands, thousands.replace(",", ""))
    assert numbers_equal(HUGE, HUGE) and not numbers_equal(HUGE, HUGE + "9") and not numbers_equal(HUGE, "9")
    assert gold_from_answer(f"So the total is huge.\n#### {HUGE}") == HUGE
    assert gold_from_answer(thousands) == thousands.replace(",", "")
    assert extract_answer("1" * 200) == "1" * 200 and extract_answer("1" * 201) == "1" * 201  # both sides of the cut


def test_no_int_str_conversion_fails_even_at_the_lowest_limit() -> None:
    """The largest exact values (parts of 200 digits, combined) print under the lowest limit a process may set."""
    n, h = "9" * 200, "9" * 100
    texts = [
        f"\\boxed{{{n} {n[:-1]}/{n}}}",  # a mixed number: a 400-digit numerator
        f"The answer is {n} and 1/{n}",
        f"The answer is {h}.{h} trillion",
        f"答案是{h}.{h}万亿",
        f"#### {h}.{h}/0.{'0' * 198}1",
        f"The answer is 1/{2**660}",  # an exact decimal of 660 places
        "1" + "0" * 5000,
    ]
    script = (
        "import json, sys\n"
        "from fastmath.grading import extract_answer, grade\n"
        "texts, gold = json.load(sys.stdin)\n"
        "print([len(extract_answer(t)) for t in texts], [grade(t, gold).outcome for t in texts])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-X", "int_max_str_digits=640", "-c", script],
        input=json.dumps([texts, n]),
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{[601, 601, 201, 201, 299, 662, 5001]} {['wrong'] * 7}\n"  # pred lengths, outcomes


@pytest.mark.parametrize(
    "answer",
    [f'"{BIG}"', BIG, f"{BIG}.0", f'"#### {BIG}"'],
    ids=["text", "json-integer", "json-float", "text-hash"],
)
def test_grade_file_with_a_5001_digit_number(tmp_path: Path, answer: str) -> None:
    src, out = tmp_path / "run.jsonl", tmp_path / "graded.jsonl"
    lines = [
        f'{{"completion": "The answer is {BIG}.", "answer": {answer}}}',
        f'{{"completion": "So {BIG}, or the answer is 7.", "answer": 7}}',
        '{"completion": "The answer is 0.00001.", "answer": 1e-05}',  # an exponent is spelled out, not read as 1
    ]
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert grade_file(src, out) == {"n": 3, "correct": 3, "wrong": 0, "none": 0, "accuracy": 1.0}
    graded = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert graded[0]["pred"] == BIG and graded[1]["pred"] == "7" and graded[2]["answer"] == 1e-05


@pytest.mark.parametrize(
    "completion",
    [
        "\\boxed{" * 2000 + BIG,
        "\\frac{" + "1" * 6000,
        f"\\boxed{{{BIG}}} #### {BIG} The answer is {BIG} and {BIG}",
        f"The answer is {BIG} million, {BIG}万, {'9' * 199} and 1/3.",
        f"答案是{'9' * 5000}万亿",
        "The answer is " + "one hundred and " * 3000,
        "答案是" + "一万" * 3000,
        "0/0 " * 100 + "1,2,3 = =" * 100,
        "".join(chr(c) for c in range(0x20, 0x3100)),
    ],
    ids=[
        "nested-boxed",
        "frac-digits",
        "big-everywhere",
        "big-scales",
        "big-chinese",
        "words",
        "zh-units",
        "junk",
        "unicode",
    ],
)
def test_extract_answer_never_raises(completion: str) -> None:
    pred = extract_answer(completion)
    assert pred is None or numbers_equal(pred, pred)


# --- linear time, measured as ratios ------------------------------------------------------------------

_RANDOM_TEXT = "".join(
    random.Random(0).choices("abc xyz 0123456789 .,;:!?-+*/=$%(){}[]#\\\n'\"<>|答案是十八一万", k=2_000_000)
)

# Each family: size n -> a completion that a quadratic step (a scan per marker, a backtracking
# regex, brace matching per `\boxed{`) makes slow.
PATHOLOGICAL: dict[str, Callable[[int], str]] = {
    "unclosed-boxed": lambda n: "\\boxed{" * n,
    "invented-questions": lambda n: "\nQuestion: x" * n,
    "boxed-one": lambda n: "\\boxed{1}" * n,
    "digit-run": lambda n: "7" * n,
    "one-comma": lambda n: "1," * n,
    "dollar-one-comma": lambda n: "$1," * n,
    "dollar-digits-no-cents": lambda n: "$" + "1" * n + " and 5 cent",
    "thousands-chain": lambda n: "1" + ",000" * n + "0",
    "answer-is": lambda n: "The answer is " * n,
    "answer-is-one": lambda n: "The answer is 1. " * n,
    "answer-label": lambda n: "A: " * n,
    "expression-no-equals": lambda n: "The answer is 1 + " * n,
    "spaces-after-operator": lambda n: "The answer is 5 +" + " " * n + "x",
    "frac-digits": lambda n: "\\frac{" + "1" * n,
    "number-words": lambda n: "The answer is " + "one hundred and " * n,
    "chinese-markers": lambda n: "答案是" * n,
    "random-text": lambda n: _RANDOM_TEXT[:n],
}


def _seconds(text: str) -> float:
    """The fastest of three runs of `extract_answer`: the one least disturbed by other load."""
    best = math.inf
    gc.disable()
    try:
        for _ in range(3):
            start = time.perf_counter()
            extract_answer(text)
            best = min(best, time.perf_counter() - start)
    finally:
        gc.enable()
    return best


def _growth(make: Callable[[int], str]) -> tuple[int, float]:
    """n where one run takes at least 20 ms, and t(2n) / t(n): about 2 when linear, 4 when quadratic."""
    n = 256
    while (base := _seconds(make(n))) < 0.02 and len(make(n)) < 1_000_000:
        n *= 2
    return n, _seconds(make(2 * n)) / base


@pytest.mark.parametrize("family", PATHOLOGICAL)
def test_grading_time_is_linear(family: str) -> None:
    n, ratio = _growth(PATHOLOGICAL[family])
    if ratio >= 3.0:  # one retry: a burst of load on a shared machine must not fail the suite
        n, ratio = min(_growth(PATHOLOGICAL[family]), (n, ratio), key=lambda r: r[1])
    assert ratio < 3.0, f"{family}: t(2n)/t(n) = {ratio:.2f} at n = {n}"


@pytest.mark.parametrize(
    ("completion", "pred"),
    [
        ("The answer is 1. " * 60_000, "1"),
        ("$1," * 350_000, "1"),
        ("\\boxed{" * 150_000, None),
        ("\nQuestion: x" * 90_000, None),
    ],
    ids=["answer-is-one", "dollar-one-comma", "unclosed-boxed", "invented-questions"],
)
def test_megabyte_completions(completion: str, pred: str | None) -> None:
    assert extract_answer(completion) == pred


def test_megabyte_of_random_text() -> None:
    pred = extract_answer(_RANDOM_TEXT[:1_000_000])
    assert pred is None or numbers_equal(pred, pred)
