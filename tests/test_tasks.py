"""Benchmarks as tasks: each shipped task's fields, golds, language and few-shot pool; every gold form;
any file as a dataset; test sets kept out of training; a user's task from one file."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest

from fastmath import tasks
from fastmath.config import DataConfig
from fastmath.data import Fields, load_problems
from fastmath.errors import FastmathError
from fastmath.eval.evaluate import first, load_dataset, summarize
from fastmath.eval.prompting import select_shots, shot_pool
from fastmath.grading import extract_answer, gold_from_answer, gold_text, grade, outcome

from .conftest import FIXTURE_DATA, SHARED_DATA, require_shared

GSM8K_TRAIN_POOL = str(FIXTURE_DATA / "gsm8k" / "train.jsonl")
ZH_POOL = "fastmath:samples/sample_chinese_math.json"

# task: (problems in the fixture, first question starts with, first gold, language, groups, few-shot pool)
EXPECTED = {
    "gsm8k": (3, "Janet’s ducks lay 16 eggs", "18", "en", None, GSM8K_TRAIN_POOL),
    "mgsm_en": (3, "Janet’s ducks lay 16 eggs", "18", "en", None, GSM8K_TRAIN_POOL),
    "mgsm_zh": (3, "珍妮特的鸭子每天下 16 颗蛋", "18", "zh", None, ZH_POOL),
    "svamp": (
        3,
        "Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on each pack How much",
        "51",
        "en",
        None,
        GSM8K_TRAIN_POOL,
    ),  # fmt: skip
    "asdiv": (3, "Seven red apples and two green apples", "9", "en", None, GSM8K_TRAIN_POOL),
    "gsm_hard": (3, "Janet’s ducks lay 16 eggs", "-9867630", "en", None, GSM8K_TRAIN_POOL),
    "cmath": (8, "芳芳买了一本书有99页", "9", "zh", ["1", "2", "3", "4", "5", "6", "6", "3"], ZH_POOL),
    "cmath_distractor": (3, "盘子里一共有15条鱼", "5", "zh", ["0", "1", "2"], ZH_POOL),
}
# task: (problems, sum of golds) on the full shared data: every record read, no gold lost
FULL = {"gsm8k": 1319, "mgsm_en": 250, "mgsm_zh": 250, "svamp": 1000, "asdiv": 2096, "gsm_hard": 1319,
        "cmath": 600, "cmath_distractor": 360}  # fmt: skip


def test_the_eight_benchmarks_ship():
    assert tasks.names() == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_task_fields_golds_language_and_few_shot_pool(name):
    n, question, gold, lang, groups, pool = EXPECTED[name]
    task = tasks.get(name)
    problems = task.problems("test", FIXTURE_DATA)
    assert len(problems) == n
    assert problems[0].question.startswith(question) and problems[0].gold == gold
    assert {p.lang for p in problems} == {lang}
    assert [p.group for p in problems] == (groups or [None] * n)
    assert task.shot_source(FIXTURE_DATA) == pool
    assert tasks.test_set_of(pool) is None, "few-shot exemplars never come from a test set"
    shots = select_shots(shot_pool(lang, pool), 4, 1234, frozenset(p.question for p in problems))
    assert len(shots) == 4 and all(p.lang == lang for p in shots)
    for p in problems:  # the final line SFT teaches grades correct against every gold
        assert grade(p.target(), p.gold, task.tolerance).outcome == "correct", (p.id, p.gold)


def test_golds_as_the_benchmarks_write_them():
    golds = {p.id: p.gold for name in ("gsm_hard", "cmath") for p in tasks.get(name).problems("test", FIXTURE_DATA)}
    assert golds["gsmhardv2.jsonl:2"] == "3244047.0999999996"  # Python float noise, kept as written
    assert golds["gsmhardv2.jsonl:3"] == "14053029.666666666"
    assert golds["cmath_dev.jsonl:7"] == "12"  # 12%
    assert golds["cmath_dev.jsonl:8"] == "1/3"  # written 2/6


def test_gsm_hard_float_golds_match_under_its_stated_tolerance():
    task = tasks.get("gsm_hard")
    assert task.tolerance == 1e-9
    gold = "3244047.0999999996"
    assert outcome("3244047.1", gold, task.tolerance) == "correct"
    assert outcome("3244047.1", gold) == "wrong", "exact without the task's tolerance"
    assert outcome("3244047", gold, task.tolerance) == "wrong"
    assert outcome("3244048", "3244047", task.tolerance) == "wrong", "never a whole unit off"
    assert outcome("14053029.6667", "14053029.666666666", task.tolerance) == "correct"  # 4+ places: a rounding
    assert outcome("14053029.7", "14053029.666666666", task.tolerance) == "wrong"
    assert outcome(None, gold, task.tolerance) == "none"


@pytest.mark.parametrize(
    ("written", "gold"),
    [
        ("42", "42"),
        ("-7", "-7"),
        ("0.50", "0.5"),
        ("1,234,567", "1234567"),
        ("-1,000.25", "-1000.25"),
        ("3/4", "0.75"),
        ("(3/4)", "0.75"),
        ("(1/3)", "1/3"),
        ("2/6", "1/3"),
        ("4(5/11)", "49/11"),
        ("-4(5/11)", "-49/11"),
        ("150%", "150"),
        ("-9867630.0", "-9867630"),
        ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72", "72"),
    ],
)
def test_every_gold_form(written, gold):
    assert gold_from_answer(written) == gold


@pytest.mark.parametrize(
    ("value", "text"), [(-9867630.0, "-9867630.0"), (1e-05, "0.00001"), (1e20, "100000000000000000000"), (72, "72")]
)
def test_numeric_golds_from_json_csv_or_parquet_keep_their_written_value(value, text):
    assert gold_text(value) == text


def test_a_percent_gold_is_matched_by_the_number_before_the_percent_sign():
    """`150%` is 150: a completion's `150%` is read as 150, so gold and answer are read alike, and
    "what percent" is answered by 150, never by 1.5."""
    assert outcome(extract_answer("超产百分之几？答案是 150%。"), "150%") == "correct"
    assert outcome(extract_answer("The answer is 150."), "150%") == "correct"
    assert outcome(extract_answer("The answer is 1.5."), "150%") == "wrong"


@pytest.mark.parametrize("bad", ["four", "3 or 4", "4(5/11))", "(3/4)(1/2)", ""])
def test_unreadable_golds_are_errors(bad):
    with pytest.raises(FastmathError):
        gold_from_answer(bad)


# --- any file as a dataset ----------------------------------------------------------------------

ROWS = [
    {"problem": "A box has 3 red and 4 blue balls. How many balls?", "solution": "7", "level": "a"},
    {"problem": "Half of a cake is eaten. What share is left?", "solution": "(1/2)", "level": "b"},
    {"problem": "What is 2 and 3/4 as a mixed number?", "solution": "2(3/4)", "level": "a"},
    {"problem": "Prices rose from 100 to 250. By what percent?", "solution": "150%", "level": "b"},
    {"problem": "A gold that cannot be read", "solution": "about four", "level": "a"},
    {"problem": "The temperature drops 5 degrees below zero. What is it?", "solution": "-5", "level": "b"},
    {"problem": "A town has 12,500 people and 1,250 leave. How many stay?", "solution": "11,250", "level": "a"},
]
GOLDS = ["7", "0.5", "2.75", "150", "-5", "11250"]


def _write(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif path.suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize(("suffix", "bad_at"), [(".jsonl", "line 5"), (".json", "record 5"), (".csv", "line 6"),
                                                (".parquet", "row 5")])  # fmt: skip
def test_any_file_with_named_fields_and_bad_golds_reported_by_line(tmp_path, caplog, suffix, bad_at):
    path = _write(tmp_path / f"mine{suffix}", ROWS)
    with caplog.at_level(logging.WARNING, logger="fastmath"):
        problems = load_problems(str(path), fields=Fields.named("problem", "solution", "level"))
    assert [p.gold for p in problems] == GOLDS
    assert [p.group for p in problems] == ["a", "b", "a", "b", "b", "a"]
    assert f"skipped 1 bad record(s) in {path}: {bad_at}: unreadable gold answer 'about four'" in caplog.text
    with pytest.raises(FastmathError, match=r"each needs 'question' and 'answer' \(name other fields with"):
        load_problems(str(path))


def test_numeric_answers_in_a_csv_and_parquet_read_alike(tmp_path):
    rows = [{"q": "GSM-Hard style", "a": -9867630.0}, {"q": "float noise", "a": 3244047.0999999996}]
    files = [_write(tmp_path / f"n{suffix}", rows) for suffix in (".parquet", ".csv", ".jsonl")]
    got = [load_problems(str(f), fields=Fields.named("q", "a")) for f in files]
    assert [[p.gold for p in ps] for ps in got] == [["-9867630", "3244047.0999999996"]] * 3


# --- test sets stay out of training -------------------------------------------------------------


def test_a_task_name_in_data_train_means_its_train_split(monkeypatch):
    monkeypatch.setenv(tasks.DATA_DIR_ENV, str(FIXTURE_DATA))
    problems = tasks.training_problems(DataConfig(train="gsm8k"), limit=5)
    assert len(problems) == 5 and all(p.id.startswith("train.jsonl:") for p in problems)
    with pytest.raises(FastmathError, match="task 'svamp' has no train split .*name its test file in data.train"):
        tasks.training_problems(DataConfig(train="svamp"), limit=None)


def test_a_test_set_named_explicitly_trains_with_a_warning(caplog):
    path = FIXTURE_DATA / "gsm8k" / "test.jsonl"
    with caplog.at_level(logging.WARNING, logger="fastmath"):
        assert len(tasks.training_problems(DataConfig(train=str(path)), limit=None)) == 3
    assert "is the test set of benchmark 'gsm8k'" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fastmath"):
        tasks.training_problems(DataConfig(train=GSM8K_TRAIN_POOL), limit=None)
        tasks.training_problems(
            DataConfig(train=str(FIXTURE_DATA / "cmath" / "cmath_dev.jsonl"), question_field="input",
                       answer_field="golden"), limit=None)  # fmt: skip
    assert "gsm8k" not in caplog.text and "'cmath'" in caplog.text
    assert tasks.test_set_of("openai/gsm8k", "test").name == "gsm8k"
    assert tasks.test_set_of("openai/gsm8k", "train") is None


def test_gsm_hard_named_for_training_is_rewarded_under_its_tolerance(caplog):
    """GRPO's correctness reward and pair mining grade a benchmark's problems as its eval does."""
    from fastmath.train.rewards import correctness

    path = FIXTURE_DATA / "gsm_hard" / "gsmhardv2.jsonl"
    with caplog.at_level(logging.WARNING, logger="fastmath"):
        problems = tasks.training_problems(DataConfig(train=str(path), question_field="input", answer_field="target"),
                                           limit=None)  # fmt: skip
    assert "'gsm_hard'" in caplog.text and {p.tolerance for p in problems} == {tasks.get("gsm_hard").tolerance}
    assert {p.tolerance for p in tasks.get("gsm_hard").problems("test", FIXTURE_DATA)} == {1e-9}
    assert {p.tolerance for p in tasks.training_problems(DataConfig(train=GSM8K_TRAIN_POOL), limit=None)} == {0.0}
    gold, said = "3244047.0999999996", ["The answer is 3244047.1."]
    assert correctness(said, [gold], tolerance=[problems[0].tolerance]) == [1.0]
    assert correctness(said, [gold]) == [0.0], "exact without a tolerance column"


# --- a user's task, and the eval's dataset registry ----------------------------------------------


def test_a_users_task_is_one_file_beside_its_data(tmp_path):
    _write(tmp_path / "shop.csv", ROWS)
    (tmp_path / "shop.yaml").write_text(
        "description: my shop's problems\nlanguage: en\ntest: {file: shop.csv}\n"
        "question: problem\nanswer: solution\ngroup: level\nshots: gsm8k\n",
        encoding="utf-8",
    )
    task, problems = load_dataset(str(tmp_path / "shop.yaml"), FIXTURE_DATA)
    assert task.name == "shop" and [p.gold for p in problems] == GOLDS
    assert task.shot_source(FIXTURE_DATA) == GSM8K_TRAIN_POOL


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("test: {file: x.csv}\nanswr: a\n", "unknown key 'answr'; a task has name, description"),
        ("question: q\n", "'test' is missing"),
        ("test: {path: x.csv}\n", "test: unknown key 'path'"),
        ("test: {file: x.csv}\nlanguage: fr\n", "language 'fr' must be auto, en or zh"),
        ("test: {file: x.csv}\ntolerance: 2\n", "tolerance 2 must be a number in"),
        ("test: {file: x.csv}\n", r"task 'bad': x.csv not found in .*--data-dir DIR"),
        ("test: {file: /tmp}\nshots: gsm8k/test.jsonl\n", "is the test set of 'gsm8k'"),
    ],
)
def test_a_bad_task_file_is_one_line_naming_the_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(FastmathError, match=message):
        task = tasks.get(str(path))
        task.shot_source(None)
        task.problems("test", tmp_path / "nowhere")


def test_unknown_dataset_names_the_tasks():
    with pytest.raises(FastmathError, match="unknown dataset 'gsm9k': use a task .*cmath, cmath_distractor"):
        load_dataset("gsm9k")


def test_a_sample_of_a_grouped_task_has_every_group_and_the_summary_breaks_down_by_group():
    problems = tasks.get("cmath").problems("test", FIXTURE_DATA)
    assert [p.group for p in first(problems, 7)] == ["1", "2", "3", "4", "5", "6", "3"]
    rows = [{"outcome": o, "finish_reason": "stop", "tokens": 1, "group": g}
            for o, g in [("correct", "1"), ("wrong", "1"), ("none", "2"), ("correct", "10")]]  # fmt: skip
    summary = summarize(rows)
    assert summary["accuracy"] == 0.5 and list(summary["groups"]) == ["1", "2", "10"]
    assert summary["groups"]["1"] == {"n": 2, "correct": 1, "accuracy": 0.5, "ci95": [0.0945, 0.9055]}


def test_every_shipped_task_reads_every_record_of_the_full_data(caplog):
    require_shared(SHARED_DATA / "cmath" / "distractor.jsonl")
    with caplog.at_level(logging.WARNING, logger="fastmath"):
        counts = {name: len(tasks.get(name).problems("test", SHARED_DATA)) for name in FULL}
    assert counts == FULL
    assert "skipped" not in caplog.text, caplog.text
    grades = [p.group for p in tasks.get("cmath").problems("test", SHARED_DATA, verbose=False)]
    assert {g: grades.count(g) for g in set(grades)} == {str(g): 100 for g in range(1, 7)}


@pytest.mark.parametrize(
    ("command", "first_args"),
    [("sft", ["tiny-sft"]), ("grpo", ["tiny-grpo", "grpo.fresh_lora=true"]), ("eval", ["--model", "m"]),
     ("suite", ["--model", "m"])],
)  # fmt: skip
def test_field_flags_are_the_recipes_data_keys(command, first_args, tmp_path):
    from fastmath import cli

    fields = ["--question-field", "problem", "--answer-field", "solution", f"training.output_dir={tmp_path}"]
    inv = cli.prepare(cli.COMMANDS[command], [*first_args, *fields])
    assert (inv.recipe.data.question_field, inv.recipe.data.answer_field) == ("problem", "solution")
