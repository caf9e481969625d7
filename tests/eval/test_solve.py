"""`python -m fastmath solve`: one answer or a prompt loop in the terminal, streamed, stoppable."""

from __future__ import annotations

import io
import shutil
import threading
import time

import pytest
import yaml

from fastmath import cli, runs
from fastmath.config import EvalConfig
from fastmath.errors import FastmathError
from fastmath.eval.prompting import Setup
from fastmath.eval.solve import Solution, solve_one
from fastmath.grading import gold_from_answer
from fastmath.io import read_jsonl
from fastmath.models import load_for_inference

from ..conftest import GSM8K_TRAIN, fastmath_cli


@pytest.fixture(scope="module")
def memorised(shared_data) -> list[tuple[str, str]]:
    """(question, gold) of training problems the overfit run reproduces."""
    rows = [r for _, r in zip(range(2), read_jsonl(GSM8K_TRAIN), strict=False)]
    return [(r["question"], gold_from_answer(r["answer"])) for r in rows]


@pytest.fixture(scope="module")
def base_setup(overfit_run) -> Setup:
    """The overfit run's base model without its adapter: untrained, it runs on until stopped."""
    model, tokenizer = load_for_inference(runs.model_settings(overfit_run), None, "hf")
    return Setup(model, tokenizer, EvalConfig(max_new_tokens=1000))


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
    assert cli.main(["solve", "--output-dir", str(tmp_path), "--max-new-tokens", "200"]) == 0
    out = capsys.readouterr()
    assert f"+ adapter {tmp_path / overfit_run.name}" in out.err
    assert out.out.count("problem> ") == len(memorised) + 1  # the last one meets the end of input
    assert [line for line in out.out.splitlines() if line.startswith("answer: ")] == [
        f"answer: {gold}" for _, gold in memorised
    ]


def test_solve_takes_model_and_system_prompt_from_the_run_and_explains_what_is_missing(overfit_run, tmp_path, capsys):
    """An adapter is asked as it was trained: its run's base model, load settings and system prompt."""
    run = shutil.copytree(overfit_run, tmp_path / "run", ignore=shutil.ignore_patterns("checkpoint-*", "eval"))
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe["data"]["system_prompt"] = "You are a pirate who does arithmetic."
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    inv = cli.prepare(cli.COMMANDS["solve"], ["--lora", str(run)])
    assert inv.parent == run and inv.recipe.model.name == recipe["model"]["name"]
    assert inv.recipe.data.system_prompt == "You are a pirate who does arithmetic."
    assert cli.prepare(cli.COMMANDS["solve"], ["--lora", "run", "--output-dir", str(tmp_path)]).parent == run
    alone = cli.prepare(cli.COMMANDS["solve"], ["--model", "other/model", "--output-dir", str(tmp_path)])
    assert (alone.parent, alone.recipe.model.name) == (None, "other/model")
    for args, message in (
        (["--output-dir", str(tmp_path / "empty")], "no finished run with an adapter"),
        (["--lora", str(tmp_path)], "holds no adapter"),
        (["--lora", str(tmp_path / "missing")], "no run '"),
    ):
        assert cli.main(["solve", "1+1?", *args]) == 2
        assert message in capsys.readouterr().err

    model, tokenizer = load_for_inference(inv.recipe.model, str(run), "hf")
    solution = Solution(
        Setup(model, tokenizer, inv.recipe.eval, system=inv.recipe.data.system_prompt), "1 + 1?", "zero_shot"
    )
    list(solution)
    assert "You are a pirate who does arithmetic." in solution.prompt


def test_stop_ends_the_generation_early(base_setup):
    solution = Solution(base_setup, "Tom has 3 apples and buys 4 more. How many apples?", "zero_shot")
    for chunks, _ in enumerate(solution, 1):
        if chunks == 3:
            solution.stop()
    assert not solution.done and solution.pred is None
    tokens = len(base_setup.tokenizer(solution.text, add_special_tokens=False)["input_ids"])
    assert tokens < 100  # stopped within a few tokens of asking, not at 1000
    deadline = time.monotonic() + 10
    while any(t.name == "fastmath-stream" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name == "fastmath-stream" for t in threading.enumerate())  # the worker is gone


def test_a_failing_generation_is_an_error_message_not_a_hang(base_setup):
    broken = Setup(base_setup.model, base_setup.tokenizer, EvalConfig(max_new_tokens=-1))  # generate() refuses it
    with pytest.raises(FastmathError, match="generation failed"):
        list(Solution(broken, "1 + 1?", "zero_shot"))
    with pytest.raises(FastmathError, match="unknown strategy"):
        Solution(base_setup, "1 + 1?", "magic")
    with pytest.raises(FastmathError, match="the problem is empty"):
        Solution(base_setup, "   ", "zero_shot")


def test_procedure_strategies_answer_as_evaluation_does(base_setup):
    setup = Setup(base_setup.model, base_setup.tokenizer, EvalConfig(max_new_tokens=8))
    question = "A box holds 6 eggs. How many eggs are in 4 boxes?"
    solution = Solution(setup, question, "self_consistency")
    assert "".join(solution) == solution.text and solution.done
    expected = solve_one(setup, question, "self_consistency")
    assert (solution.text, solution.pred) == (expected["completion"], expected["pred"])
