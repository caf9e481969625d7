"""The Streamlit app, page by page (AppTest), over an outputs directory of real tiny-model tables.

The outputs directory is built once per session: the overfit SFT run, its evaluation through
`python -m fastmath eval` (memorised training problems it gets right, test problems it does
not), and a short DPO run on top of it. The tables must show exactly what those runs wrote.
"""

from __future__ import annotations

import html
import json
import shutil
import sys
from pathlib import Path

import pytest

from fastmath import cli
from fastmath.app import tables
from fastmath.errors import FastmathError
from fastmath.grading import gold_from_answer
from fastmath.io import read_jsonl

from ..conftest import GSM8K_TEST, GSM8K_TRAIN, REPO, fastmath_cli

STRATEGIES = ("zero_shot", "cot")
DATASET = "mix"  # the eval file's stem: 4 memorised training problems, then 2 unseen test problems


def _gsm8k(path: Path, n: int) -> list[dict]:
    return [r for _, r in zip(range(n), read_jsonl(path), strict=False)]


def build_app_outputs(overfit_run: Path, base: Path) -> Path:
    """`base/app-outputs`, built once and reused by every test module that asks (marked complete)."""
    outputs = base / "app-outputs"
    if (outputs / ".complete").exists():
        return outputs
    shutil.rmtree(outputs, ignore_errors=True)
    sft = outputs / overfit_run.name
    shutil.copytree(overfit_run, sft, ignore=shutil.ignore_patterns("checkpoint-*", "eval"))
    data = base / f"{DATASET}.jsonl"
    rows = [{"id": f"train-{i}", **r} for i, r in enumerate(_gsm8k(GSM8K_TRAIN, 4))]
    rows += [{"id": f"test-{i}", **r} for i, r in enumerate(_gsm8k(GSM8K_TEST, 2))]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = fastmath_cli(
        "eval", "--lora", str(sft), "--dataset", str(data), "--strategies", ",".join(STRATEGIES),
        "--max-new-tokens", "160", "--output-dir", str(outputs),
        env={"OMP_NUM_THREADS": "1"},  # a tiny model gains nothing from threads, and CI machines are shared
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    dpo = ["dpo", "tiny-dpo", f"dpo.sft_run={sft}", "dpo.pairs=fastmath:samples/preference_data.json",
           "dpo.num_epochs=1", f"training.output_dir={outputs}", "training.run_name=dpo-app"]  # fmt: skip
    assert cli.main(dpo) == 0
    (outputs / ".complete").touch()
    return outputs


@pytest.fixture(scope="session")
def app_outputs(overfit_run, tmp_path_factory) -> Path:
    return build_app_outputs(overfit_run, tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def sft_name(overfit_run) -> str:
    return overfit_run.name


def _dpo_name(outputs: Path) -> str:
    return "dpo-app"


def _summary(outputs: Path, run: str) -> dict:
    return json.loads((outputs / run / "eval" / DATASET / "summary.json").read_text())


def _records(outputs: Path, run: str, strategy: str) -> list[dict]:
    return list(read_jsonl(outputs / run / "eval" / DATASET / f"{strategy}.jsonl"))


def open_app(monkeypatch, outputs: Path, page: str | None = None):
    """The app as `streamlit run app.py` starts it, with FASTMATH_OUTPUTS=outputs, on `page`."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(sys, "argv", ["app.py"])
    monkeypatch.setenv("FASTMATH_OUTPUTS", str(outputs))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120).run()
    if page:
        at.switch_page(f"fastmath/app/pages/{page}.py").run()
    assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
    return at


def _widget(at, kind: str, label: str):
    (found,) = [w for w in getattr(at, kind) if w.label == label]
    return found


# --- Runs ----------------------------------------------------------------------------------------


def test_runs_page_shows_each_runs_real_figures(monkeypatch, app_outputs, sft_name):
    at = open_app(monkeypatch, app_outputs)
    table = at.dataframe[0].value.set_index("run")
    sft = table.loc[sft_name]
    summary = json.loads((app_outputs / sft_name / "summary.json").read_text())
    assert (sft["stage"], sft["status"]) == ("sft", "finished")
    assert sft["final loss"] == summary["final_loss"] and sft["trained tokens"] == summary["trained_tokens"]
    for strategy, figures in _summary(app_outputs, sft_name).items():
        assert sft[f"{DATASET} · {strategy}"] == pytest.approx(100 * figures["accuracy"])
    # the memorised problems are answered, the unseen ones are not: the numbers are not all alike
    assert 0 < sft[f"{DATASET} · zero_shot"] < 100

    dpo = table.loc[_dpo_name(app_outputs)]
    assert (dpo["stage"], dpo["parent"], dpo["base model"]) == ("dpo", sft_name, sft["base model"])
    assert sft["base model"] == Path(json.loads((app_outputs / sft_name / "run.json").read_text())["base_model"]).name
    assert dpo["final loss"] == json.loads((app_outputs / "dpo-app" / "summary.json").read_text())["final_loss"]


def test_runs_page_compare_button_opens_compare_with_the_chosen_runs(monkeypatch, app_outputs, sft_name):
    at = open_app(monkeypatch, app_outputs)
    chosen = [sft_name, _dpo_name(app_outputs)]
    _widget(at, "multiselect", "Runs to compare").set_value(chosen).run()
    _widget(at, "button", "Compare these runs").click().run()
    assert [t.value for t in at.title] == ["Compare"]
    assert _widget(at, "multiselect", "Runs").value == chosen


# --- Run -----------------------------------------------------------------------------------------


def test_run_page_shows_recipe_curves_and_eval_intervals(monkeypatch, app_outputs, sft_name):
    at = open_app(monkeypatch, app_outputs, "run")
    _widget(at, "selectbox", "Run").set_value(sft_name).run()
    assert [s.value for s in at.subheader] == ["Loss", "Learning rate"]  # no DPO curves for an SFT run
    assert len(at.get("vega_lite_chart")) == 2
    assert "r: 64" in at.code[0].value and f"run_name: {sft_name}" in at.code[0].value
    table = at.dataframe[0].value.set_index("strategy")
    for strategy, figures in _summary(app_outputs, sft_name).items():
        row = table.loc[strategy]
        assert row["n"] == figures["n"] == 6
        assert row["accuracy %"] == pytest.approx(100 * figures["accuracy"])
        assert [row["95% CI low"], row["95% CI high"]] == pytest.approx([100 * x for x in figures["ci95"]])
        assert row["95% CI low"] <= row["accuracy %"] <= row["95% CI high"]


def test_run_page_shows_dpo_reward_and_margin_curves(monkeypatch, app_outputs):
    at = open_app(monkeypatch, app_outputs, "run")
    _widget(at, "selectbox", "Run").set_value(_dpo_name(app_outputs)).run()
    assert [s.value for s in at.subheader] == ["Loss", "Learning rate", "DPO rewards", "DPO reward margin and accuracy"]
    margins = tables.metrics(app_outputs / "dpo-app")["rewards/margins"].dropna()
    assert len(margins) >= 2  # a curve, logged every step
    assert at.info[0].value.startswith("Not evaluated yet")


# --- Compare -------------------------------------------------------------------------------------


def test_compare_page_matrix_recipe_diff_and_loss_curves(monkeypatch, app_outputs, sft_name):
    dpo = _dpo_name(app_outputs)
    at = open_app(monkeypatch, app_outputs, "compare")
    _widget(at, "multiselect", "Runs").set_value([sft_name, dpo]).run()
    matrix, diff = at.dataframe[0].value, at.dataframe[1].value
    assert matrix.loc[sft_name, f"{DATASET} · cot"] == pytest.approx(
        100 * _summary(app_outputs, sft_name)["cot"]["accuracy"]
    )
    assert matrix.loc[dpo].isna().all()  # the DPO run was not evaluated
    # only what differs: the SFT and DPO recipes share the backend, not the scheduler
    assert "model.backend" not in diff.index and "training.run_name" not in diff.index
    assert diff.loc["training.lr_scheduler"].tolist() == ['"cosine"', '"constant"']
    assert all(len(set(row)) > 1 for row in diff.itertuples(index=False))
    assert len(at.get("vega_lite_chart")) == 1  # the overlaid loss curves


# --- Problems ------------------------------------------------------------------------------------


def _shown_ids(at) -> list[str]:
    return at.dataframe[0].value["id"].tolist()


def test_problems_page_breakdown_and_outcome_filters(monkeypatch, app_outputs, sft_name):
    records = _records(app_outputs, sft_name, "zero_shot")
    kinds = {r["id"]: tables.problem_kind(r) for r in records}
    assert "correct" in kinds.values() and set(kinds.values()) - {"correct"}  # both kinds to filter
    at = open_app(monkeypatch, app_outputs, "problems")
    _widget(at, "selectbox", "Run").set_value(sft_name).run()
    _widget(at, "selectbox", "Strategy").set_value("zero_shot").run()

    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Correct"] == f"{sum(r['outcome'] == 'correct' for r in records)} / 6"
    for kind in tables.ERROR_KINDS:
        assert metrics[kind.capitalize()] == str(list(kinds.values()).count(kind))

    # the default filter shows the errors, and each outcome filter exactly its problems
    assert sorted(_shown_ids(at)) == sorted(i for i, k in kinds.items() if k != "correct")
    for kind in tables.KINDS:
        _widget(at, "multiselect", "Outcome").set_value([kind]).run()
        assert sorted(_shown_ids(at)) == sorted(i for i, k in kinds.items() if k == kind)


def test_problems_page_search_and_highlighted_answer(monkeypatch, app_outputs, sft_name):
    records = {r["id"]: r for r in _records(app_outputs, sft_name, "zero_shot")}
    at = open_app(monkeypatch, app_outputs, "problems")
    _widget(at, "selectbox", "Run").set_value(sft_name).run()
    _widget(at, "selectbox", "Strategy").set_value("zero_shot").run()
    _widget(at, "multiselect", "Outcome").set_value(list(tables.KINDS)).run()
    assert sorted(_shown_ids(at)) == sorted(records)

    _widget(at, "text_input", "Search").input("natalia").run()  # GSM8K train #0, any case
    assert _shown_ids(at) == ["train-0"]
    row = records["train-0"]
    assert row["outcome"] == "correct" and row["pred"] == gold_from_answer(row["gold"])
    assert at.text[0].value == row["question"]
    (completion,) = [h.proto.body for h in at.html]
    assert f"<mark>{row['pred']}</mark>" in completion
    _widget(at, "text_input", "Search").input("no such words anywhere").run()
    assert at.dataframe[0].value.empty


def test_problems_page_side_by_side_with_another_strategy(monkeypatch, app_outputs, sft_name):
    at = open_app(monkeypatch, app_outputs, "problems")
    _widget(at, "selectbox", "Run").set_value(sft_name).run()
    _widget(at, "selectbox", "Strategy").set_value("zero_shot").run()
    _widget(at, "multiselect", "Outcome").set_value(list(tables.KINDS)).run()
    _widget(at, "selectbox", "Problem").set_value("test-0").run()
    _widget(at, "selectbox", "Side by side with").set_value((sft_name, "cot")).run()
    shown = [h.proto.body.replace("<mark>", "").replace("</mark>", "") for h in at.html]
    for strategy, body in zip(("zero_shot", "cot"), shown, strict=True):
        (record,) = [r for r in _records(app_outputs, sft_name, strategy) if r["id"] == "test-0"]
        assert html.escape(record["completion"]) in body


# --- Solve ---------------------------------------------------------------------------------------


def _ask(at, question: str, adapter: str, **settings) -> None:
    _widget(at, "selectbox", "Adapter").set_value(adapter).run()
    _widget(at, "selectbox", "Strategy").set_value("zero_shot").run()
    if "timeout" in settings:
        _widget(at, "number_input", "Time limit (seconds)").set_value(settings["timeout"])
    _widget(at, "text_area", "Problem (English or Chinese)").input(question)
    _widget(at, "button", "Solve").click().run()


def test_solve_page_answers_a_problem_with_the_adapter(monkeypatch, app_outputs, sft_name):
    problem = _gsm8k(GSM8K_TRAIN, 1)[0]
    at = open_app(monkeypatch, app_outputs, "solve")
    _ask(at, problem["question"], sft_name)
    assert not at.exception and not at.error
    gold = gold_from_answer(problem["answer"])
    assert [s.value for s in at.success] == [f"Answer: {gold}"]
    assert f"<mark>{gold}</mark>" in at.html[0].proto.body
    # a rerun (any widget) shows the last answer again instead of losing it
    _widget(at, "slider", "Max new tokens").set_value(256).run()
    assert [s.value for s in at.success] == [f"Answer: {gold}"]


def test_solve_page_shows_timeouts_and_empty_problems_as_messages(monkeypatch, app_outputs, sft_name):
    at = open_app(monkeypatch, app_outputs, "solve")
    # the memorised problem with the longest solution (~320 tokens): writing it takes well over 0.1 s,
    # where an unseen problem may get a short answer just as fast
    longest = max(_gsm8k(GSM8K_TRAIN, 16), key=lambda r: len(r["answer"]))
    _ask(at, longest["question"], sft_name, timeout=0.1)
    assert not at.exception
    assert [e.value for e in at.error] and "no complete answer within 0.1 s" in at.error[0].value
    _ask(at, "   ", sft_name)
    assert not at.exception and "the problem is empty" in at.error[0].value


# --- the outputs directory, and what the app will read -------------------------------------------


def test_outputs_dir_comes_from_the_command_line(monkeypatch, app_outputs, sft_name, tmp_path):
    from streamlit.testing.v1 import AppTest

    monkeypatch.delenv("FASTMATH_OUTPUTS", raising=False)
    monkeypatch.setattr(sys, "argv", ["app.py", "--outputs", str(app_outputs)])
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()
    assert sft_name in at.dataframe[0].value["run"].tolist()
    for argv, message in [
        (["app.py", "--outputs", str(tmp_path / "missing")], "not found"),
        (["app.py", "--output", str(app_outputs)], "unknown app arguments --output"),
    ]:
        monkeypatch.setattr(sys, "argv", argv)
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()
        assert not at.exception and message in at.error[0].value


def test_an_empty_outputs_dir_explains_what_to_do(monkeypatch, tmp_path):
    for page in ("runs", "run", "compare", "problems", "solve"):
        at = open_app(monkeypatch, tmp_path, None if page == "runs" else page)
        assert [i.value for i in at.info], page
    assert "make quickstart" in open_app(monkeypatch, tmp_path).info[0].value


def test_names_outside_the_listing_are_refused(app_outputs, sft_name):
    for name in ("..", "../..", "/etc", f"{sft_name}/..", ".complete", "no-such-run"):
        with pytest.raises(FastmathError, match="no run named"):
            tables.run_dir(app_outputs, name)
    run = tables.run_dir(app_outputs, sft_name)
    with pytest.raises(FastmathError, match="no evaluated dataset"):
        tables.problems(run, "../../..", "zero_shot")
    with pytest.raises(FastmathError, match="no mix results for strategy"):
        tables.problems(run, DATASET, "../summary")


# --- pure helpers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("marked", "pred"),  # [the span] the answer should be highlighted at, if any
    [
        ("She pays $1,000.50 in total.\nThe answer is [$1,000.50].", "1000.5"),
        ("3 + 4 = 7 apples.\nThe answer is [7].", "7"),  # the last 7, not the one in the sum
        ("总共 １８ 个。答案是 [18]。", "18"),
        ("The answer is [5].\nQuestion: Tom has 9 pens and 5 cups", "5"),  # not the invented question's 5
        ("There are 12 cows.", None),
        ("The answer is 12.", "13"),
    ],
)
def test_answer_span_marks_the_number_the_grader_read(marked, pred):
    completion = marked.replace("[", "").replace("]", "")
    expected = (marked.index("["), marked.index("]") - 1) if "[" in marked else None
    assert tables.answer_span(completion, pred) == expected


def test_recipe_diff_keeps_only_differing_settings():
    diff = tables.recipe_diff(
        {
            "a": {"lora": {"r": 8, "alpha": 16}, "training": {"run_name": "a"}},
            "b": {"lora": {"r": 16, "alpha": 16}, "training": {"run_name": "b"}, "eval": {"samples": 5}},
        }
    )
    assert diff.to_dict("index") == {"eval.samples": {"a": "—", "b": "5"}, "lora.r": {"a": "8", "b": "16"}}
