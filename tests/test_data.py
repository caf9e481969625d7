"""Data loading and cleaning: GSM8K, the seed's JSON format, MGSM TSV, and bad records."""

import json

import pytest

from fastmath.data import load_problems
from fastmath.errors import FastmathError
from fastmath.grading import extract_answer

from .conftest import GSM8K_TRAIN, MGSM_ZH, REPO, fastmath_cli


def test_gsm8k_targets_lose_calculator_marks_and_end_in_one_answer_line(shared_data):
    problems = load_problems(str(GSM8K_TRAIN), limit=50)
    assert len(problems) == 50
    first = problems[0]
    assert first.gold == "72" and first.lang == "en"
    target = first.target()
    assert "<<" not in target and "####" not in target
    assert target.splitlines()[-1] == "The answer is 72."
    assert "<<48/2=24>>" in first.target(keep_calculator=True)
    for p in problems:  # the grader reads back exactly the gold answer from every training target
        assert extract_answer(p.target()) == p.gold


def test_mgsm_tsv_and_chinese_answer_line(shared_data):
    problems = load_problems(str(MGSM_ZH))
    assert len(problems) == 250 and all(p.lang == "zh" for p in problems)
    assert problems[0].target() == f"答案是 {problems[0].gold}。"


def test_sample_files_in_the_seed_format():
    zh = load_problems(str(REPO / "data" / "sample_chinese_math.json"))
    assert len(zh) >= 30 and all(p.lang == "zh" for p in zh)
    assert all(p.target().endswith(f"答案是 {p.gold}。") for p in zh)


def test_bad_records_are_counted_by_line_and_good_ones_kept(tmp_path, capsys):
    path = tmp_path / "mixed.jsonl"
    lines = [
        {"question": "Tom has 3 apples and buys 2. How many?", "answer": "3+2=5\n#### 5"},
        {"question": "no answer field"},
        {"question": "", "answer": "#### 4"},
        {"question": "What is it?", "answer": "no number here"},
        "{not json",
        {"question": "Half of 10?", "answer": "5"},
    ]
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    problems = load_problems(str(path))
    assert [p.gold for p in problems] == ["5", "5"]
    err = capsys.readouterr().err
    assert "skipped 4 bad record(s)" in err
    for fragment in (
        "line 2: missing field 'answer'",
        "line 3: empty question",
        "line 4: unreadable gold answer 'no number here'",
        "line 5: invalid JSON",
    ):
        assert fragment in err


def test_no_usable_record_and_missing_file_are_clear_errors(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"q": 1}, {"question": "x"}]))
    with pytest.raises(FastmathError, match=r"no usable records in .*bad.json .*record 1: missing field"):
        load_problems(str(path))
    with pytest.raises(FastmathError, match="not found"):
        load_problems(str(tmp_path / "missing.jsonl"))


def test_cli_missing_data_file_exits_2_with_message(tiny_model, tmp_path):
    p = fastmath_cli(
        "sft",
        "recipes/tiny-sft.yaml",
        f"model.name={tiny_model}",
        "data.train=nope/missing.jsonl",
        f"training.output_dir={tmp_path}",
        timeout=120,
    )
    assert p.returncode == 2, p.stderr
    assert "nope/missing.jsonl' not found; check data.train in the recipe" in p.stderr
    assert not any(tmp_path.iterdir()), "a failed start must not leave a run directory behind"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00\x01\x02PK\x03\x04 binary", "is binary, not text"),
        (
            '{"question": "caf\xe9", "answer": "1"}\n'.encode("latin-1"),
            r"is not UTF-8 text \(byte 17\); save it as UTF-8",
        ),
    ],
)
def test_binary_and_non_utf8_data_files_are_short_errors(tmp_path, content, message):
    path = tmp_path / "train.jsonl"
    path.write_bytes(content)
    with pytest.raises(FastmathError, match=message):
        load_problems(str(path))


def test_unreadable_data_file_names_the_file_and_the_fix(tmp_path):
    """A file the OS refuses to read (here /proc/self/mem, which refuses even root) is a short error."""
    path = tmp_path / "train.jsonl"
    path.symlink_to("/proc/self/mem")
    with pytest.raises(FastmathError, match=r"cannot read data file .*train.jsonl: .*check its permissions"):
        load_problems(str(path))
