"""Strategies: prompts in both languages, exemplars that are right and never from test, ToT's budget, PoT's sandbox."""

from __future__ import annotations

import dataclasses

import pytest

from fastmath.config import EvalConfig
from fastmath.data import load_problems
from fastmath.eval.prompting import (
    COT_EXEMPLARS,
    POT_EXEMPLARS,
    Setup,
    cot_solution,
    select_shots,
    shot_pool,
)
from fastmath.eval.sandbox import run_program
from fastmath.eval.strategies import STRATEGIES, build_messages
from fastmath.eval.tot import tot_budget
from fastmath.generation import Generation
from fastmath.grading import final_answer_line, grade, numbers_equal
from fastmath.prompts import CJK, chat_messages

from ..conftest import GSM8K_TEST, GSM8K_TRAIN
from ..test_generation import single_thread  # noqa: F401 (autouse: one torch thread here too)

QUESTIONS = {
    "en": "A baker makes 4 trays of 12 rolls and sells 30. How many rolls are left?",
    "zh": "面包师烤了 4 盘面包，每盘 12 个，卖掉了 30 个。还剩多少个面包？",
}


def test_strategies_in_table_order_each_with_one_line_description():
    assert list(STRATEGIES) == [
        "zero_shot",
        "few_shot",
        "cot",
        "zero_shot_cot",
        "structured_cot",
        "tot",
        "self_consistency",
        "pot",
    ]
    assert all(s.name == name and s.description and "\n" not in s.description for name, s in STRATEGIES.items())
    streamed = [name for name, s in STRATEGIES.items() if s.streams]
    assert streamed == ["zero_shot", "few_shot", "cot", "zero_shot_cot", "structured_cot"]


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_every_strategy_asks_in_the_problems_language(strategy, lang):
    messages = build_messages(strategy, QUESTIONS[lang], lang)
    assert messages[0]["role"] == "system" and messages[-1]["role"] == "user"
    assert messages[-1]["content"].startswith(QUESTIONS[lang])
    roles = [m["role"] for m in messages[1:-1]]
    assert roles == ["user", "assistant"] * (len(roles) // 2), "exemplars are whole earlier turns"
    instructions = " ".join(m["content"] for m in messages if m["role"] == "system")
    assert bool(CJK.search(instructions)) == (lang == "zh")
    for m in messages[1:-1]:  # exemplars too are in the problem's language
        assert bool(CJK.search(m["content"])) == (lang == "zh"), m["content"][:80]


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_zero_shot_is_exactly_the_prompt_sft_trains_on(lang):
    assert build_messages("zero_shot", QUESTIONS[lang], lang) == chat_messages(QUESTIONS[lang], lang)


def test_a_recipes_own_system_prompt_replaces_the_default_one_sft_used():
    """SFT trains with data.system_prompt when a recipe sets it; the prompts built on that prompt follow it."""
    for strategy in ("zero_shot", "few_shot", "cot", "zero_shot_cot", "tot", "self_consistency"):
        assert build_messages(strategy, QUESTIONS["en"], "en", system="Be brief.")[0]["content"] == "Be brief."
    assert build_messages("zero_shot", QUESTIONS["en"], "en", system="Be brief.") == chat_messages(
        QUESTIONS["en"], "en", "Be brief."
    )
    for strategy in ("structured_cot", "pot"):  # their instructions are the strategy
        assert build_messages(strategy, QUESTIONS["en"], "en", system="Be brief.")[0]["content"] != "Be brief."


def test_zero_shot_cot_adds_the_trigger_and_structured_cot_names_its_sections():
    assert build_messages("zero_shot_cot", QUESTIONS["en"], "en")[-1]["content"].endswith("Let's think step by step.")
    assert build_messages("zero_shot_cot", QUESTIONS["zh"], "zh")[-1]["content"].endswith("让我们一步一步地思考。")
    system = build_messages("structured_cot", QUESTIONS["en"], "en")[0]["content"]
    assert all(section in system for section in ("Known facts:", "Goal:", "Steps:", "Answer: The answer is N."))
    system = build_messages("structured_cot", QUESTIONS["zh"], "zh")[0]["content"]
    assert all(section in system for section in ("已知条件：", "求解目标：", "解题步骤：", "答案：答案是 N。"))


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_cot_exemplars_are_eight_and_their_own_answers_grade_correct(lang):
    assert len(COT_EXEMPLARS[lang]) == 8
    for i, (_, _, gold) in enumerate(COT_EXEMPLARS[lang]):
        solution = cot_solution(lang, i)
        assert solution.endswith("\n" + final_answer_line(gold, lang))
        assert grade(solution, gold).outcome == "correct", solution


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_pot_exemplar_programs_print_their_questions_answer(lang):
    for index, code in POT_EXEMPLARS[lang]:
        result = run_program(code)
        assert result.ok and numbers_equal(result.answer, COT_EXEMPLARS[lang][index][2]), (code, result)


def test_few_shot_exemplars_come_from_train_never_from_test(shared_data):
    test_questions = {p.question.strip() for p in load_problems(str(GSM8K_TEST), verbose=False)}
    pool = shot_pool("en", str(GSM8K_TRAIN))
    shots = select_shots(pool, 8, seed=1234)
    assert len(shots) == 8 and all(p.id.startswith("train.jsonl:") for p in shots)
    assert not test_questions & {p.question.strip() for p in shots}
    assert [p.id for p in select_shots(pool, 8, seed=1234)] == [p.id for p in shots], "fixed seed, fixed exemplars"
    assert [p.id for p in select_shots(pool, 8, seed=1)] != [p.id for p in shots]
    # a problem being evaluated is never its own exemplar, whatever file the exemplars come from
    test_pool = shot_pool("en", str(GSM8K_TEST))
    assert select_shots(test_pool, 8, seed=1234, exclude=frozenset(test_questions)) == []
    messages = build_messages("few_shot", QUESTIONS["en"], "en", exemplars=shots)
    assert [m["content"] for m in messages[1:-1:2]] == [p.question for p in shots]
    assert all(
        m["content"].endswith(final_answer_line(p.gold, "en")) for m, p in zip(messages[2:-1:2], shots, strict=True)
    )


def test_chinese_few_shot_draws_on_chinese_worked_problems(shared_data):
    shots = select_shots(shot_pool("zh", str(GSM8K_TRAIN)), 4, seed=0)
    assert len(shots) == 4 and all(p.lang == "zh" and p.target().endswith("。") for p in shots)


def _completion(text: str) -> Generation:
    return Generation(text=text, tokens=len(text.split()), finish_reason="stop")


def test_program_of_thought_runs_the_written_program_in_the_sandbox():
    from fastmath.eval.strategies import run_program as run_written_program

    ok = run_written_program(_completion("Rolls left:\n```python\ntrays = 4\nprint(trays * 12 - 30)\n```"))
    assert (ok.pred, ok.extra["sandbox_error"], ok.extra["isolation"]) == ("18", None, "bwrap")
    assert ok.extra["program"] == "trays = 4\nprint(trays * 12 - 30)\n"
    failed = run_written_program(_completion("```python\nimport os\nprint(os.getcwd())\n```\nThe answer is 18."))
    assert failed.pred is None and "forbidden" in failed.extra["sandbox_error"], "the printed result is the answer"
    missing = run_written_program(_completion("The answer is 18."))
    assert missing.pred is None and missing.extra == {"program": None, "sandbox_error": "no program", "isolation": None}


def test_self_consistency_takes_the_majority_answer_and_shows_a_sample_that_gave_it():
    from fastmath.eval.strategies import _vote

    samples = [_completion(t) for t in ("The answer is 7.", "So 18.\nThe answer is 18.", "The answer is 18.00.")]
    voted = _vote(samples)
    assert voted.pred == "18" and voted.completion == samples[1].text
    assert [s["pred"] for s in voted.extra["samples"]] == ["7", "18", "18"]
    assert voted.tokens == sum(g.tokens for g in samples)
    assert _vote([_completion("no idea"), _completion("none")]).pred is None


def test_tot_value_words_in_both_languages():
    from fastmath.eval.tot import UNJUDGED_SCORE
    from fastmath.eval.tot import value as _value

    assert _value("Sure.") == 20 and _value("likely") == 1 and _value("Impossible!") == 0.001
    assert _value("不可能") == 0.001 and _value("可能") == 1 and _value("肯定") == 20
    assert _value("the steps look fine") == UNJUDGED_SCORE


@pytest.fixture(scope="module")
def overfit_model(overfit_run):
    from fastmath import runs
    from fastmath.models import load_for_inference

    return load_for_inference(runs.model_settings(overfit_run), str(overfit_run), "hf")


@pytest.mark.slow
def test_tot_is_a_bounded_beam_search_on_a_real_model(overfit_model, shared_data):
    model, tokenizer = overfit_model
    problems = load_problems(str(GSM8K_TRAIN), limit=3, verbose=False)
    cfg = dataclasses.replace(EvalConfig(), tot_breadth=2, tot_depth=3, tot_proposals=2, max_new_tokens=48)
    assert tot_budget(cfg) == 3 * (2 * 2 + 2 * 2)
    setup = Setup(model, tokenizer, cfg)
    solved = dict(STRATEGIES["tot"].solve(setup, [(p.question, p.lang) for p in problems]))
    assert sorted(solved) == [0, 1, 2]
    for solution in solved.values():
        assert 1 <= solution.extra["calls"] <= tot_budget(cfg)
        assert 0 < len(solution.completion.splitlines()) <= cfg.tot_depth, "one line per round at most"
        assert solution.finish_reason in ("stop", "length") and solution.tokens > 0
    again = dict(STRATEGIES["tot"].solve(setup, [(p.question, p.lang) for p in problems]))
    assert again == solved, "seeded sampling: the same search every time"
