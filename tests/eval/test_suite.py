"""`python -m fastmath suite` end to end on the tiny model: shipped tasks, a user's task file and a
CSV through one command, one table, eval's resumable files, and the app's side-by-side view."""

from __future__ import annotations

import json

import pytest

from fastmath import cli, tasks
from fastmath.app import tables
from fastmath.errors import FastmathError

from ..conftest import FIXTURE_DATA, fastmath_cli

ENV = {"OMP_NUM_THREADS": "1"}


def test_suite_defaults_to_every_shipped_task_and_one_strategy(tmp_path):
    inv = cli.prepare(cli.COMMANDS["suite"], ["--model", "m", "--output-dir", str(tmp_path)])
    assert inv.recipe.eval.datasets == tasks.names() and len(inv.recipe.eval.datasets) == 8
    with pytest.raises(FastmathError, match="suite runs one strategy, got cot, pot: pass --strategy NAME"):
        from fastmath.eval import suite

        inv = cli.prepare(cli.COMMANDS["suite"], ["--model", "m", "--strategy", "cot,pot"])
        suite.main(inv)


@pytest.mark.slow
def test_suite_over_shipped_tasks_a_users_task_file_and_a_csv(tiny_model, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "shop.csv").write_text("problem,solution\nWhat is 2 + 2?,4\nHalf of 9?,4(1/2)\nbad row,many\n")
    (mine / "shop.yaml").write_text("test: {file: shop.csv}\nquestion: problem\nanswer: solution\n")
    (mine / "loose.csv").write_text("q,a\nWhat is 3 + 3?,6\nWhat is 10 - 4?,6\n")
    out = tmp_path / "outputs"
    args = ["suite", "--model", str(tiny_model), "--output-dir", str(out), "--data-dir", str(FIXTURE_DATA),
            "--dataset", f"gsm8k,cmath,{mine / 'shop.yaml'},{mine / 'loose.csv'}", "--question-field", "q",
            "--answer-field", "a", "--strategy", "zero_shot", "--samples", "6", "--max-new-tokens", "8"]  # fmt: skip
    p = fastmath_cli(*args, env=ENV, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "skipped 1 bad record(s)" in p.stderr and "shop.csv: line 4: unreadable gold answer 'many'" in p.stderr
    table = "| benchmark |" + p.stdout.split("| benchmark |", 1)[1].split("\n\n")[0]
    cells = {
        c[1].strip(): [x.strip() for x in c[2:-1]] for c in (r.split("|") for r in table.splitlines()) if len(c) > 2
    }
    assert {name: cells[name][2] for name in ("gsm8k", "cmath", "shop", "loose")} == {
        "gsm8k": "3", "cmath": "6", "shop": "2", "loose": "2"}  # fmt: skip
    assert [cells[f"cmath · grade {g}"][2] for g in range(1, 7)] == ["1"] * 6, "a sample has every grade"
    run = next(out.iterdir())
    written = (run / "eval" / "suite-zero_shot.md").read_text(encoding="utf-8")
    assert "first 6 problems of each benchmark" in written and table.strip() in written
    for name, n in (("gsm8k", 3), ("cmath", 6), ("shop", 2), ("loose", 2)):
        rows = [json.loads(x) for x in (run / "eval" / name / "zero_shot.jsonl").read_text().splitlines()]
        assert len(rows) == n and all(r["outcome"] in ("correct", "wrong", "none") for r in rows)
    cmath = json.loads((run / "eval" / "cmath" / "summary.json").read_text())["zero_shot"]
    assert cmath["group_by"] == "grade" and sorted(cmath["groups"]) == ["1", "2", "3", "4", "5", "6"]
    assert sum(g["n"] for g in cmath["groups"].values()) == cmath["n"] == 6

    again = fastmath_cli(*args, env=ENV, timeout=600)  # the same files as eval: nothing is redone
    assert again.returncode == 0, again.stderr[-3000:]
    for name in ("gsm8k", "cmath", "shop", "loose"):
        assert json.loads((run / "eval" / name / "summary.json").read_text())["zero_shot"]["resumed"] > 0

    board = tables.benchmark_board(out)  # the app: the benchmarks side by side, CMATH per grade
    assert board[["run", "strategy"]].values.tolist() == [[run.name, "zero_shot"]]
    assert {"gsm8k", "cmath", "cmath · grade 3", "shop", "loose"} <= set(board.columns)
    assert "cmath · zero_shot · grade 6" in tables.accuracy_matrix(out, [run.name]).columns


@pytest.mark.slow
def test_a_missing_benchmark_file_is_one_line_and_exit_2(tiny_model, tmp_path):
    p = fastmath_cli("suite", "--model", str(tiny_model), "--output-dir", str(tmp_path), "--data-dir",
                     str(tmp_path / "none"), "--dataset", "svamp", env=ENV, timeout=300)  # fmt: skip
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1] == (
        f"error: task 'svamp': svamp/SVAMP.json not found in {tmp_path / 'none' / 'svamp' / 'SVAMP.json'}; "
        "pass --data-dir DIR (DIR/svamp/SVAMP.json) or set FASTMATH_DATA_DIR: this benchmark has no hub copy "
        "fastmath reads"
    )
    assert list(tmp_path.iterdir()) == [], "nothing written before the inputs are checked"
