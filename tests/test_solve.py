"""`python -m fastmath solve`: one answer or a prompt loop in the terminal, streamed, stoppable."""

from __future__ import annotations

import io
import threading
import time

import pytest

from fastmath import rundir
from fastmath.config import EvalConfig
from fastmath.errors import FastmathError
from fastmath.evaluate import solve_one
from fastmath.grading import gold_from_answer
from fastmath.io import read_jsonl
from fastmath.solve import Solution, load_model, main, resolve_model

from .conftest import GSM8K_TRAIN, fastmath_cli


@pytest.fixture(scope="module")
def memorised(shared_data) -> list[tuple[str, str]]:
    """(question, gold) of training problems the overfit run reproduces."""
    rows = [r for _, r in zip(range(2), read_jsonl(GSM8K_TRAIN), strict=False)]
    return [(r["question"], gold_from_answer(r["answer"])) for r in rows]


@pytest.fixture(scope="module")
def base_model(overfit_run) -> tuple:
    """The overfit run's base model without its adapter: untrained, it runs on until stopped."""
    base, _ = resolve_model(None, str(overfit_run), overfit_run.parent)
    return load_model(base, None)


def test_solve_answers_one_question_in_the_terminal(overfit_run, memorised):
    question, gold = memorised[0]
    result = fastmath_cli("solve", question, "--lora", str(overfit_run), "--max-new-tokens", "200")
    assert result.returncode == 0, result.stderr
    assert f"+ adapter {overfit_run}" in result.stderr
    solution, answer = result.stdout.rstrip("\n").rsplit("\n", 1)
    assert answer == f"answer: {gold}"
    assert solution.endswith(f"The answer is {gold}.")


def test_solve_asks_in_a_loop_until_end_of_input(overfit_run, memorised, monkeypatch, capsys, tmp_path):
    """No question: the prompt loop, here fed by a pipe; the newest finished adapter run is used."""
    (tmp_path / overfit_run.name).symlink_to(overfit_run)
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(f"{q}\n" for q, _ in memorised)))
    assert main(["--output-dir", str(tmp_path), "--max-new-tokens", "200"]) == 0
    out = capsys.readouterr()
    assert f"+ adapter {tmp_path / overfit_run.name}" in out.err
    assert out.out.count("problem> ") == len(memorised) + 1  # the last one meets the end of input
    assert [line for line in out.out.splitlines() if line.startswith("answer: ")] == [
        f"answer: {gold}" for _, gold in memorised
    ]


def test_solve_resolves_the_adapter_and_explains_what_is_missing(overfit_run, tmp_path):
    base, adapter = resolve_model(None, str(overfit_run), tmp_path)
    assert (base, adapter) == (rundir.read_run(overfit_run)["base_model"], overfit_run)
    assert resolve_model(None, overfit_run.name, overfit_run.parent) == (base, overfit_run)  # a run name
    assert resolve_model("other/model", str(overfit_run), tmp_path) == ("other/model", overfit_run)
    assert resolve_model("other/model", None, tmp_path) == ("other/model", None)  # a base model alone
    with pytest.raises(FastmathError, match="no finished run with an adapter"):
        resolve_model(None, None, tmp_path)
    with pytest.raises(FastmathError, match="no adapter"):
        resolve_model(None, str(tmp_path), tmp_path)
    result = fastmath_cli("solve", "1+1?", "--lora", str(tmp_path / "missing"))
    assert result.returncode == 2 and "no adapter" in result.stderr and "Traceback" not in result.stderr


def test_stop_ends_the_generation_early(base_model):
    model, tokenizer = base_model
    solution = Solution(model, tokenizer, "Tom has 3 apples and buys 4 more. How many apples?", max_new_tokens=1000)
    for chunks, _ in enumerate(solution, 1):
        if chunks == 3:
            solution.stop()
    assert not solution.done and solution.pred is None
    tokens = len(tokenizer(solution.text, add_special_tokens=False)["input_ids"])
    assert tokens < 100  # stopped within a few tokens of asking, not at 1000
    deadline = time.monotonic() + 10
    while any(t.name == "fastmath-solve" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name == "fastmath-solve" for t in threading.enumerate())  # the worker is gone


def test_a_failing_generation_is_an_error_message_not_a_hang(base_model):
    model, tokenizer = base_model
    with pytest.raises(FastmathError, match="generation failed"):
        list(Solution(model, tokenizer, "1 + 1?", max_new_tokens=-1))
    with pytest.raises(FastmathError, match="unknown strategy"):
        Solution(model, tokenizer, "1 + 1?", strategy="magic")


def test_procedure_strategies_answer_as_evaluation_does(base_model):
    model, tokenizer = base_model
    question = "A box holds 6 eggs. How many eggs are in 4 boxes?"
    solution = Solution(model, tokenizer, question, strategy="self_consistency", max_new_tokens=8)
    assert "".join(solution) == solution.text and solution.done
    expected = solve_one(model, tokenizer, question, "self_consistency", EvalConfig(max_new_tokens=8))
    assert (solution.text, solution.pred) == (expected["completion"], expected["pred"])
