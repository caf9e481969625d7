"""The Streamlit app, page by page (AppTest), over an outputs directory of real tiny-model runs.

The outputs directory is built once per session: the overfit SFT run, its evaluation through
`python -m fastmath eval` (memorised training problems it gets right, test problems it does
not), and a short DPO run on top of it. The tables must show exactly what those runs wrote.
Tests that change runs (a broken file, a run still training) work on a copy.
"""

from __future__ import annotations

import ast
import html
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastmath import cli, runs, stages
from fastmath.app import i18n, jobs, tables, ui
from fastmath.errors import FastmathError
from fastmath.grading import gold_from_answer
from fastmath.io import JsonlAppender, atomic_write_json, read_jsonl

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


def _copy(app_outputs: Path, tmp_path: Path, *names: str) -> Path:
    """Some of the session's runs in an outputs directory of the test's own, to change."""
    outputs = tmp_path / "outputs"
    for name in names:
        shutil.copytree(app_outputs / name, outputs / name)
    return outputs


def _select_row(at, table: str, row: int):
    """Click a row of a table (st.dataframe with on_select): AppTest sets the selection state."""
    at.session_state[table] = {"selection": {"rows": [row], "columns": [], "cells": []}}
    return at.run()


# --- Runs ----------------------------------------------------------------------------------------


def test_runs_page_leads_with_the_best_run_of_each_eval(monkeypatch, app_outputs, sft_name):
    at = open_app(monkeypatch, app_outputs)
    assert [s.value for s in at.subheader] == ["Leaderboard", "All runs"]
    board = at.dataframe[0].value.set_index("dataset · strategy")
    for strategy, figures in _summary(app_outputs, sft_name).items():
        row = board.loc[f"{DATASET} · {strategy}"]
        low, high = (100 * x for x in figures["ci95"])
        assert row["best run"] == sft_name and row["stage"] == "sft" and row["n"] == "6"
        assert row["accuracy"] == f"{100 * figures['accuracy']:.1f}% ({low:.1f}–{high:.1f})"
        # the DPO run was not evaluated and no base model was: nothing to gain over, said as —
        assert (row["vs parent"], row["vs base model"], row["runs"]) == ("—", "—", 1)
    assert list(board.columns)[:3] == ["best run", "stage", "accuracy"]  # read without scrolling


def test_runs_page_lists_every_run_with_its_real_figures_and_no_raw_values(monkeypatch, app_outputs, sft_name):
    at = open_app(monkeypatch, app_outputs)
    table = at.dataframe[1].value.set_index("run")
    sft, dpo = table.loc[sft_name], table.loc[_dpo_name(app_outputs)]
    summary = json.loads((app_outputs / sft_name / "summary.json").read_text())
    assert (sft["stage"], sft["status"]) == ("sft", "finished")
    assert sft["final loss"] == f"{summary['final_loss']:.4f}"
    assert sft["trained tokens"] == f"{summary['trained_tokens']:,}"
    for strategy, figures in _summary(app_outputs, sft_name).items():
        assert sft[f"{DATASET} · {strategy}"] == tables.accuracy_text(figures)
    # the memorised problems are answered, the unseen ones are not: the numbers are not all alike
    assert not sft[f"{DATASET} · zero_shot"].startswith(("0.0%", "100.0%"))
    assert (dpo["stage"], dpo["parent"], dpo["base model"]) == ("dpo", sft_name, sft["base model"])
    assert sft["base model"] == Path(json.loads((app_outputs / sft_name / "run.json").read_text())["base_model"]).name
    assert dpo[f"{DATASET} · cot"] == "—" and sft["parent"] == "—"  # not evaluated; no parent
    cells = [str(v) for v in table.reset_index().to_numpy().ravel()]
    assert not [c for c in cells if c in ("None", "nan", "NaN", "") or c.startswith("/")]
    assert list(table.columns)[:4] == ["status", "stage", "final loss", "trained tokens"]  # in view, accuracy after


def test_a_row_opens_its_run(monkeypatch, app_outputs, sft_name):
    at = _select_row(open_app(monkeypatch, app_outputs), "leaderboard", 0)
    assert [t.value for t in at.title] == ["Run"] and _widget(at, "selectbox", "Run").value == sft_name
    at = open_app(monkeypatch, app_outputs)
    row = at.dataframe[1].value["run"].tolist().index(_dpo_name(app_outputs))
    at = _select_row(at, "all_runs", row)
    assert _widget(at, "selectbox", "Run").value == _dpo_name(app_outputs)


def test_a_broken_file_marks_its_run_not_the_page(monkeypatch, app_outputs, sft_name, tmp_path):
    outputs = _copy(app_outputs, tmp_path, sft_name, _dpo_name(app_outputs))
    (outputs / sft_name / "summary.json").write_text("{ not json")
    (outputs / sft_name / "eval" / DATASET / "summary.json").write_text("")
    at = open_app(monkeypatch, outputs)
    table = at.dataframe[0].value.set_index("run")  # no evaluation left to lead with: the runs table comes first
    assert table.loc[sft_name, "status"] == f"broken: summary.json, eval/{DATASET}/summary.json"
    assert table.loc[sft_name, "final loss"] == "—"  # what the broken summary held is not made up
    assert table.loc[_dpo_name(app_outputs), "status"] == "finished"
    assert at.info[0].value.startswith("Nothing evaluated yet")
    at.switch_page("fastmath/app/pages/run.py").run()
    _widget(at, "selectbox", "Run").set_value(sft_name).run()
    assert not at.exception and "damaged: summary.json cannot be read" in at.warning[0].value
    # each tab shows what it reads: the eval summary's error on Evaluation, the recipe, the summary's error
    assert [e.value for e in at.error] == [
        f"eval/{DATASET}/summary.json cannot be read (not valid JSON)",
        "summary.json cannot be read (not valid JSON)",
    ]
    assert "run_name:" in at.code[0].value and "fastmath export" in at.code[1].value


def test_runs_page_compare_button_opens_compare_with_the_chosen_runs(monkeypatch, app_outputs, sft_name):
    at = open_app(monkeypatch, app_outputs)
    chosen = [sft_name, _dpo_name(app_outputs)]
    _widget(at, "multiselect", "Runs to compare").set_value(chosen).run()
    _widget(at, "button", "Compare these runs").click().run()
    assert [t.value for t in at.title] == ["Compare"]
    assert _widget(at, "multiselect", "Runs").value == chosen


def _eval_summary(run: Path, dataset: str, strategy: str, correct: int, n: int) -> None:
    from fastmath.eval.evaluate import wilson_interval

    figures = {"n": n, "accuracy": correct / n, "ci95": list(wilson_interval(correct, n))}
    atomic_write_json(run / "eval" / dataset / "summary.json", {strategy: figures})


def test_leaderboard_gains_are_over_the_parent_and_the_base_model_on_the_same_problems(tmp_path):
    made = [("base-m", "base", None, 10), ("sft-a", "sft", None, 30), ("dpo-b", "dpo", "sft-a", 36),
            ("sft-c", "sft", None, 20)]  # fmt: skip
    for day, (name, stage, parent, correct) in enumerate(made, start=1):
        meta = {"stage": stage, "base_model": "/m/model", "parent": parent, "status": "finished"}
        atomic_write_json(tmp_path / name / "run.json", {**meta, "started": f"2026-01-0{day}"})
        _eval_summary(tmp_path / name, "gsm8k", "cot", correct, 40)
    _eval_summary(tmp_path / "sft-c", "mgsm_zh", "cot", 5, 10)
    board = tables.leaderboard(tmp_path)
    assert board["dataset · strategy"].tolist() == ["gsm8k · cot", "mgsm_zh · cot"]  # best first
    best = board.iloc[0]
    assert (best["best run"], best["stage"], best["runs"]) == ("dpo-b", "dpo", 4)
    assert best["accuracy"] == "90.0% (76.9–96.0)"
    assert (best["vs parent"], best["vs base model"]) == ("+15.0 pp", "+65.0 pp")
    assert board.iloc[1][["vs parent", "vs base model"]].tolist() == ["—", "—"]  # no parent; base not run on it
    assert tables.best_run(tmp_path) == "dpo-b"
    _eval_summary(tmp_path / "base-m", "gsm8k", "cot", 10, 20)  # other problems: no honest gain to show
    assert tables.leaderboard(tmp_path).iloc[0]["vs base model"] == "—"


def test_benchmarks_side_by_side_with_cmath_per_grade(tmp_path):
    """A suite's run shows its benchmarks as columns on the Runs page, and on Compare, with CMATH's grades."""
    from fastmath.eval.evaluate import summarize

    atomic_write_json(tmp_path / "sft-a" / "run.json", {"stage": "sft", "status": "finished"})
    _eval_summary(tmp_path / "sft-a", "gsm8k", "cot", 3, 4)
    rows = [{"outcome": o, "finish_reason": "stop", "tokens": 1, "group": g}
            for o, g in [("correct", "1"), ("wrong", "1"), ("correct", "2")]]  # fmt: skip
    atomic_write_json(tmp_path / "sft-a" / "eval" / "cmath" / "summary.json",
                      {"cot": summarize(rows) | {"group_by": "grade"}})  # fmt: skip
    atomic_write_json(tmp_path / "sft-b" / "run.json", {"stage": "sft", "status": "finished"})
    _eval_summary(tmp_path / "sft-b", "gsm8k", "cot", 1, 4)  # one benchmark only: not a suite
    board = tables.benchmark_board(tmp_path)
    assert board.columns.tolist() == ["run", "strategy", "cmath", "cmath · grade 1", "cmath · grade 2", "gsm8k"]
    assert board.iloc[0][["run", "strategy", "gsm8k"]].tolist() == ["sft-a", "cot", "75.0% (30.1–95.4)"]
    assert board.iloc[0]["cmath · grade 1"] == "50.0% (9.4–90.5)"
    matrix = tables.accuracy_matrix(tmp_path, ["sft-a", "sft-b"])
    assert (
        matrix.loc["sft-b", "cmath · cot · grade 2"] == "—"
        and matrix.loc["sft-a", "cmath · cot"] == "66.7% (20.8–93.8)"
    )


# --- Run -----------------------------------------------------------------------------------------


def test_run_page_shows_progress_recipe_curves_and_eval_intervals(monkeypatch, app_outputs, sft_name):
    at = open_app(monkeypatch, app_outputs, "run")
    assert _widget(at, "selectbox", "Run").value == sft_name  # the leaderboard's best comes first
    metrics = {m.label: m.value for m in at.metric}
    summary = json.loads((app_outputs / sft_name / "summary.json").read_text())
    assert metrics["Status"] == "finished" and metrics["Step"] == f"{summary['steps']} / {summary['steps']}"
    assert [s.value for s in at.subheader] == ["Loss", "Learning rate"]  # no DPO curves for an SFT run
    assert len(at.get("vega_lite_chart")) == 2
    assert not [c for c in at.caption if c.value.startswith("Live")]  # a finished run does not refresh
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


def test_a_base_model_run_is_finished_on_every_tab(monkeypatch, app_outputs, sft_name, tmp_path):
    outputs = _copy(app_outputs, tmp_path, sft_name)
    base = outputs / "base-tiny-qwen2"
    shutil.copytree(app_outputs / sft_name / "eval", base / "eval")
    atomic_write_json(base / runs.RUN_JSON, {"stage": "base", "base_model": "/m/tiny-qwen2", "status": "finished"})
    at = open_app(monkeypatch, outputs, "run")
    _widget(at, "selectbox", "Run").set_value(base.name).run()
    assert [m.value for m in at.metric] == ["finished"]
    assert [i.value for i in at.info] == [
        "A base model is not trained: it has no curves.",
        "No log: the app keeps the output of the commands it starts; this run was started elsewhere.",
        "This run has no recipe.yaml (a base-model evaluation).",
        "A base model is evaluated, not trained: it has no training summary.",  # not "has not finished"
        "No adapter to export (a base-model run).",
    ]
    assert len(at.dataframe[0].value) == len(STRATEGIES)  # its evaluations


def test_a_training_run_refreshes_itself_until_it_ends(monkeypatch, app_outputs, sft_name, tmp_path):
    outputs = _copy(app_outputs, tmp_path, sft_name)
    run = outputs / sft_name
    rows = list(read_jsonl(run / runs.METRICS))
    (run / runs.METRICS).write_text("".join(json.dumps({**r, "time": 1000.0 + 2 * r["step"]}) + "\n" for r in rows[:2]))
    atomic_write_json(run / runs.RUN_JSON, {**runs.read(run), "status": "running"})
    at = open_app(monkeypatch, outputs, "run")
    metrics = {m.label: m.value for m in at.metric}
    total = rows[0]["max_steps"]
    assert metrics["Status"] == "running" and metrics["Step"] == f"{rows[1]['step']} / {total}"
    assert metrics["Time left"] == tables.duration_text(2 * (total - rows[1]["step"]))  # 2 s a step, as logged
    assert [c.value for c in at.caption if c.value.startswith("Live")]
    with JsonlAppender(run / runs.METRICS) as out:  # the trainer logs on; the view shows it without a reload
        out.write({**rows[2], "time": 1000.0 + 2 * rows[2]["step"]})
    at.run()
    assert {m.label: m.value for m in at.metric}["Step"] == f"{rows[2]['step']} / {total}"
    atomic_write_json(run / runs.RUN_JSON, {**runs.read(run), "status": "finished"})
    at.run()
    assert {m.label: m.value for m in at.metric}["Status"] == "finished"
    assert not [c for c in at.caption if c.value.startswith("Live")]  # ended: no more refreshing


def test_run_page_charts_grpo_metrics_when_they_are_logged(tmp_path):
    grpo = {"reward": 0.2, "reward_std": 0.1, "rewards/correct/mean": 0.1, "rewards/format/mean": 0.5,
            "frac_reward_zero_std": 0.25, "completions/mean_length": 80, "kl": 0.01}  # fmt: skip
    rows = [{"step": s, "loss": 0.1, **{k: v * s for k, v in grpo.items()}} for s in (1, 2, 3)]
    (tmp_path / runs.METRICS).write_text("".join(json.dumps(r) + "\n" for r in rows))
    groups = tables.metric_groups(tables.metrics(tmp_path))
    assert list(groups) == ["Loss", "GRPO reward", "GRPO reward spread within a group",
                            "GRPO groups whose rewards all agree", "Completion length",
                            "KL to the reference"]  # fmt: skip
    # the spread has an axis of its own; the legend names each series readably
    assert sorted(set(groups["GRPO reward"]["series"])) == ["reward", "rewards/correct/mean", "rewards/format/mean"]
    assert list(groups["GRPO reward spread within a group"]["series"].unique()) == ["reward_std"]
    from fastmath.app import ui

    assert [ui.series_name(s) for s in ("reward", "rewards/correct/mean")] == ["mean reward", "correct (mean)"]
    assert len(groups["KL to the reference"]) == 3


# --- Compare -------------------------------------------------------------------------------------


def test_compare_page_matrix_recipe_diff_and_loss_curves(monkeypatch, app_outputs, sft_name):
    dpo = _dpo_name(app_outputs)
    at = open_app(monkeypatch, app_outputs, "compare")
    assert _widget(at, "multiselect", "Runs").value == [sft_name, dpo]  # the two newest trained runs
    matrix, diff = at.dataframe[0].value, at.dataframe[1].value
    assert matrix.loc[sft_name, f"{DATASET} · cot"] == tables.accuracy_text(_summary(app_outputs, sft_name)["cot"])
    assert (matrix.loc[dpo] == "—").all()  # the DPO run was not evaluated
    # only what differs, and only keys the stages read: SFT's schedule is training.*, DPO's dpo.*
    assert "model.backend" not in diff.index and "training.run_name" not in diff.index
    assert diff.loc["training.lr_scheduler"].tolist() == ["cosine", "constant"]
    assert diff.loc["dpo.beta"].tolist() == ["not used", "0.1"]
    assert diff.loc["training.num_epochs"].tolist() == ["80.0", "not used"]
    assert all(len(set(row)) > 1 for row in diff.itertuples(index=False))
    (chart,) = at.get("vega_lite_chart")
    spec = json.loads(chart.proto.spec)
    assert spec["encoding"]["x"]["field"] == "step" and spec["encoding"]["color"]["legend"]["labelLimit"] == 0


def test_loss_curves_keep_every_point_of_runs_logged_at_other_intervals(app_outputs, sft_name):
    curves, unreadable = tables.loss_curves(app_outputs, [sft_name, _dpo_name(app_outputs)])
    assert unreadable == []
    for name in (sft_name, _dpo_name(app_outputs)):
        logged = tables.metrics(app_outputs / name)["loss"].dropna()
        shown = curves[curves["run"] == name].set_index("step")["value"]
        assert shown.to_dict() == logged.to_dict()  # not one point lost to the other run's steps


def test_recipe_diff_keeps_only_differing_settings_the_stages_read():
    diff = tables.recipe_diff(
        {
            "a": ("sft", {"lora": {"r": 8, "alpha": 16}, "training": {"run_name": "a", "num_epochs": 1.0}}),
            "b": (
                "dpo",
                {
                    "lora": {"r": 16, "alpha": 16},
                    "training": {"run_name": "b"},
                    "eval": {"samples": 5},
                    "dpo": {"beta": 0.1},
                },
            ),
        }  # fmt: skip
    )
    # eval.samples is not a key DPO reads: a stale or hand-edited recipe.yaml does not show it
    assert diff.to_dict("index") == {
        "dpo.beta": {"a": "not used", "b": "0.1"},
        "lora.r": {"a": "8", "b": "16"},
        "training.num_epochs": {"a": "1.0", "b": "not used"},
    }


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


def test_problems_page_opens_on_the_best_run_not_the_newest(monkeypatch, app_outputs, sft_name, tmp_path):
    outputs = _copy(app_outputs, tmp_path, sft_name)
    newer = outputs / "sft-newer"  # evaluated after the best run, on the same problems, worse
    shutil.copytree(outputs / sft_name / "eval", newer / "eval")
    atomic_write_json(newer / "run.json", {**runs.read(outputs / sft_name), "started": "2099-01-01T00:00:00"})
    _eval_summary(newer, DATASET, "zero_shot", 0, 6)
    assert tables.run_names(outputs)[-1] == "sft-newer" and tables.best_run(outputs) == sft_name
    at = open_app(monkeypatch, outputs, "problems")
    assert _widget(at, "selectbox", "Run").value == sft_name


def _completions(at) -> list[str]:
    """The completions the page shows (its other HTML is the app's style sheet)."""
    return [h.proto.body for h in at.html if "fastmath-completion" in h.proto.body]


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
    (completion,) = _completions(at)
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
    shown = [body.replace("<mark>", "").replace("</mark>", "") for body in _completions(at)]
    for strategy, body in zip(("zero_shot", "cot"), shown, strict=True):
        (record,) = [r for r in _records(app_outputs, sft_name, strategy) if r["id"] == "test-0"]
        assert html.escape(record["completion"]) in body


# --- Train ---------------------------------------------------------------------------------------


def _train_form(at, recipe: str, **keys):
    """Train page: pick the recipe, type the keys (a tab per section) and return the page."""
    _widget(at, "selectbox", "Recipe").set_value(recipe).run()
    for name, value in keys.items():
        name = name.replace("__", ".")
        (widget,) = [w for kind in ("number_input", "text_input", "checkbox", "selectbox")
                     for w in getattr(at, kind) if w.label == name]  # fmt: skip
        (widget.input(value) if widget.type == "text_input" else widget.set_value(value)).run()
    return at


def test_train_form_shows_the_exact_command_and_the_recipes_own_checks(monkeypatch, app_outputs, sft_name, tiny_model):
    at = open_app(monkeypatch, app_outputs, "train")
    commands = [f"{c}: {cli.COMMANDS[c].help}" for c in jobs.commands()]
    assert _widget(at, "selectbox", "Command").options == commands and commands[0].startswith("sft: ")
    _train_form(at, "tiny-sft", model__name=str(tiny_model), training__max_steps=3)
    assert _widget(at, "number_input", "lora.r").value == 64  # the recipe's own value
    assert _widget(at, "number_input", "lora.r").help == "LoRA rank (>= 1)"
    (command,) = [c.value for c in at.code]
    typed = f"model.name={tiny_model} training.max_steps=3"
    assert command.startswith(f"{sys.executable} -m fastmath sft tiny-sft {typed} ")
    assert f"training.output_dir={app_outputs}" in command and "lora.r=" not in command  # only what changed
    assert not _widget(at, "button", "Start").disabled
    _widget(at, "number_input", "lora.r").set_value(0).run()
    assert at.error[0].value == "recipe key 'lora.r' must be >= 1, got 0"
    assert _widget(at, "button", "Start").disabled
    _widget(at, "selectbox", "Command").set_value("dpo: DPO alignment of an SFT run's adapter").run()
    assert _widget(at, "selectbox", "dpo.sft_run").options == ["(the newest finished one)", sft_name]


@pytest.mark.slow  # trains in a real process
def test_train_page_starts_the_command_which_a_reload_finds_and_stop_stops(monkeypatch, tiny_model, tmp_path):
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    # A million steps: the job cannot finish before the test stops it, however fast the machine.
    at = _train_form(open_app(monkeypatch, outputs, "train"), "tiny-sft", model__name=str(tiny_model),
                     training__max_steps=1_000_000)  # fmt: skip
    (command,) = [c.value for c in at.code]
    _widget(at, "button", "Start").click().run()
    (job,) = jobs.load(outputs)
    assert job.argv == shlex.split(command) and job.state == "running"  # what was shown is what runs
    run, log = Path(job.run), Path(job.run) / runs.LOG
    _until(lambda: runs.read(run).get("status") == "running", log)  # it trains
    at = open_app(monkeypatch, outputs, "train")  # a reload (a new session) finds it
    assert _widget(at, "selectbox", "Job").value == job.name
    assert [c.value for c in at.caption if c.value.startswith("Live")]  # watched live
    _widget(at, "button", "Stop").click().run()
    _until(lambda: jobs.load(outputs)[0].state != "stopping", log)
    assert jobs.load(outputs)[0].state == runs.read(run)["status"] == "stopped"
    assert log.read_text().startswith(f"\n$ {command}\n") and "interrupted" in log.read_text()  # as Ctrl-C does
    at.run()
    assert [b.label for b in at.button if b.label in ("Stop", "Resume")] == ["Resume"]


def _until(condition, log: Path, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, log.read_text()[-3000:] if log.exists() else "no log"
        time.sleep(0.5)


# --- Solve ---------------------------------------------------------------------------------------


def _ask(at, question: str, adapter: str, expected: str = "", **settings):
    """Ask on the Solve page and redraw it (as its live view does) until the answer is written."""
    _widget(at, "selectbox", "Adapter").set_value(adapter).run()
    _widget(at, "selectbox", "Strategy").set_value("zero_shot").run()
    if "timeout" in settings:
        _widget(at, "number_input", "Time limit (seconds)").set_value(settings["timeout"])
    _widget(at, "text_area", "Problem (English or Chinese)").input(question)
    _widget(at, "text_input", "Expected answer (optional)").input(expected)
    _widget(at, "button", "Solve").click().run()
    if "solve_writing" not in at.session_state:
        return at  # refused before anything was written (the message is on the page)
    writing = at.session_state["solve_writing"]
    deadline = time.monotonic() + 120
    while writing.running and not settings.get("keep_running"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    return at.run()


def test_solve_page_checks_the_answer_against_the_expected_one(monkeypatch, app_outputs, sft_name):
    problem = _gsm8k(GSM8K_TRAIN, 1)[0]
    gold = gold_from_answer(problem["answer"])
    at = open_app(monkeypatch, app_outputs, "solve")
    assert _widget(at, "selectbox", "Adapter").value == sft_name  # the leaderboard's best run
    _ask(at, problem["question"], sft_name, expected=gold)
    assert not at.exception and not at.error
    assert [s.value for s in at.success] == [f"Right: {gold}"]
    (body,) = _completions(at)
    assert f"<mark>{gold}</mark>" in body and "max-height" in body  # in a box of bounded height
    assert "Question" in at.code[0].value or problem["question"][:30] in at.code[0].value  # the prompt sent
    # a rerun (any widget) shows the last answer again instead of losing it
    _widget(at, "slider", "Max new tokens").set_value(256).run()
    assert [s.value for s in at.success] == [f"Right: {gold}"]
    _ask(at, problem["question"], sft_name, expected=str(int(gold) + 1))
    assert [e.value for e in at.error] == [f"Wrong: answered {gold}, expected {int(gold) + 1}"] and not at.success
    _ask(at, problem["question"], sft_name)
    assert [i.value for i in at.info] == [f"Answer: {gold}"] and not at.success  # nothing to check it against


def test_solve_page_has_one_stop_button_while_writing(monkeypatch, app_outputs):
    at = open_app(monkeypatch, app_outputs, "solve")
    _ask(at, "小明有 5 个苹果，又买了 7 个。他一共有多少个苹果？", "(none: the base model alone)", keep_running=True)
    writing = at.session_state["solve_writing"]
    assert writing.running, "the untrained base model writes hundreds of tokens"
    assert [b.label for b in at.button] == ["Solve", "Stop"]
    _widget(at, "button", "Stop").click().run()
    deadline = time.monotonic() + 30
    while writing.running:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    at.run()
    assert [w.value for w in at.warning] == ["Stopped before the model finished."]
    assert [b.label for b in at.button] == ["Solve"]


def test_solve_page_shows_timeouts_and_empty_problems_as_messages(monkeypatch, app_outputs, sft_name):
    at = open_app(monkeypatch, app_outputs, "solve")
    # the memorised problem with the longest solution (~320 tokens): writing it takes well over 0.1 s,
    # where an unseen problem may get a short answer just as fast
    longest = max(_gsm8k(GSM8K_TRAIN, 16), key=lambda r: len(r["answer"]))
    _ask(at, longest["question"], sft_name, timeout=0.1)
    assert not at.exception
    assert [e.value for e in at.error] and "no complete answer within 0.1 s" in at.error[0].value
    at = _ask(open_app(monkeypatch, app_outputs, "solve"), "   ", sft_name)  # a new session: nothing asked yet
    assert not at.exception and [e.value for e in at.error] == ["The problem is empty: type a math problem first."]
    assert "solve_writing" not in at.session_state  # refused before a model was loaded or a thread started


@pytest.mark.parametrize(
    ("pred", "gold", "outcome"),
    [("18", "18.0", "right"), ("18", "$1,000", "wrong"), (None, "18", "no answer"), ("18", None, "answer")],
)
def test_solve_outcome_is_right_or_wrong_only_against_an_expected_answer(pred, gold, outcome):
    assert tables.solve_outcome(pred, gold) == outcome


# --- the outputs directory, the language, the settings ------------------------------------------


def test_outputs_dir_comes_from_the_command_line(monkeypatch, app_outputs, sft_name, tmp_path):
    from streamlit.testing.v1 import AppTest

    monkeypatch.delenv("FASTMATH_OUTPUTS", raising=False)
    monkeypatch.setattr(sys, "argv", ["app.py", "--outputs", str(app_outputs)])
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()
    assert sft_name in at.dataframe[1].value["run"].tolist()
    for argv, message in [
        (["app.py", "--outputs", str(tmp_path / "missing")], "not found"),
        (["app.py", "--output", str(app_outputs)], "unknown app arguments --output"),
    ]:
        monkeypatch.setattr(sys, "argv", argv)
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()
        assert not at.exception and message in at.error[0].value


def test_an_empty_outputs_dir_explains_what_to_do(monkeypatch, tmp_path):
    for page in ("runs", "run", "train", "compare", "problems", "solve"):
        at = open_app(monkeypatch, tmp_path, None if page == "runs" else page)
        assert [i.value for i in at.info], page
    assert "make quickstart" in open_app(monkeypatch, tmp_path).info[0].value


def test_the_interface_switches_to_chinese(monkeypatch, app_outputs, sft_name):
    at = open_app(monkeypatch, app_outputs)
    _widget(at, "radio", "Language · 语言").set_value("中文").run()
    assert [t.value for t in at.title] == ["运行列表"] and [s.value for s in at.subheader] == ["排行榜", "所有运行"]
    assert list(at.dataframe[0].value.columns)[:3] == ["数据集 · 策略", "最佳运行", "阶段"]
    at.switch_page("fastmath/app/pages/run.py").run()  # the choice holds on every page
    assert [t.value for t in at.title] == ["运行"] and _widget(at, "selectbox", "运行").value == sft_name
    assert {m.label for m in at.metric} >= {"状态", "步数", "损失"}


def _literals() -> set[str]:
    """Every text the app passes to `t` or uses as a kept choice's label, read from its source."""
    found = set()
    for path in (REPO / "fastmath" / "app").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            called = getattr(node, "func", None)
            name = getattr(called, "id", None) or getattr(called, "attr", None)
            if name in ("t", "say", "choose", "choose_many") and node.args and isinstance(node.args[0], ast.Constant):
                found.add(node.args[0].value)
    return found


def _assigned(page: str, name: str) -> str:
    """The source of a page's top-level constant (a page is a script: importing it would draw it)."""
    tree = ast.parse((REPO / "fastmath" / "app" / "pages" / f"{page}.py").read_text(encoding="utf-8"))
    (found,) = [n.value for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == name]
    return ast.unparse(found)


def test_every_label_has_its_chinese(app_outputs, sft_name):
    words = _literals() | set(stages.metric_groups()) | set(tables.KINDS) | {k.capitalize() for k in tables.KINDS}
    words |= {"running", "stopping", "broken", "incomplete", *jobs.ENDED, *ui.SERIES.values()}
    words |= set(ast.literal_eval(_assigned("problems", "FINISH_REASONS")).values())
    for frame in (tables.leaderboard(app_outputs), tables.runs_table(app_outputs),
                  tables.eval_table(app_outputs / sft_name)):  # fmt: skip
        words |= {c for c in frame.columns if " · " not in c or c == "dataset · strategy"}
    assert "Runs" in words and len(words) > 100
    assert sorted(w for w in words if w not in i18n.ZH) == []
    assert all(i18n.ZH[w].count("{") == w.count("{") for w in words)  # the same blanks to fill


def test_streamlit_runs_with_the_repos_settings():
    shown = subprocess.run(
        [sys.executable, "-m", "streamlit", "config", "show"], cwd=REPO, capture_output=True, text=True, timeout=120
    ).stdout
    settings = dict(line.split(" = ", 1) for line in shown.splitlines() if " = " in line and line[0] != "#")
    assert settings["toolbarMode"] == '"viewer"'  # no Deploy button, no developer menu
    assert (settings["fileWatcherType"], settings["runOnSave"]) == ('"none"', "false")  # no watching of torch
    assert (settings["address"], settings["gatherUsageStats"]) == ('"localhost"', "false")
    assert settings["fastReruns"] == "false"  # one script runner at a time over the session state


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


def test_progress_and_time_left_from_the_metrics_rows(tmp_path):
    rows = [
        {"step": s, "max_steps": 100, "loss": 1 / s, "time": t, "tokens_per_s": 10.0 * s}
        for s, t in [(10, 0.0), (20, 10.0), (30, 500.0), (40, 510.0)]
    ]  # fmt: skip  (a resume paused at 30)
    (tmp_path / runs.METRICS).write_text("".join(json.dumps(r) + "\n" for r in rows))
    now = tables.progress(tables.metrics(tmp_path))
    assert (now.step, now.max_steps, now.loss, now.tokens_per_s) == (40, 100, 1 / 40, 400.0)
    assert now.seconds_left == pytest.approx(60.0)  # 1 step/s, the pace of the intervals, not the pause
    assert [tables.duration_text(s) for s in (None, 42, 185, 3720)] == ["—", "42 s", "3 min 05 s", "1 h 02 min"]


def test_log_tail_shows_a_progress_bar_as_its_latest_state(tmp_path):
    (tmp_path / runs.LOG).write_text("$ python -m fastmath sft\n 10%|#  | 1/10\r 20%|## | 2/10\r\nloss 1.0\n")
    assert tables.log_tail(tmp_path) == "$ python -m fastmath sft\n 20%|## | 2/10\nloss 1.0"
    assert tables.log_tail(tmp_path, lines=1) == "loss 1.0"


# --- Damaged files, ties, 中文 help (issue 22) ----------------------------------------------------


def test_files_cut_short_show_their_run_incomplete_never_as_whole(monkeypatch, app_outputs, sft_name, tmp_path):
    """A per-problem file that lost its last rows and a metrics file whose last row was cut mid-line,
    in a finished run: the run is `incomplete`, each file named with what is missing where it is read."""
    outputs = _copy(app_outputs, tmp_path, sft_name, _dpo_name(app_outputs))
    run = outputs / sft_name
    per_problem = run / "eval" / DATASET / "cot.jsonl"
    per_problem.write_text("".join(per_problem.read_text().splitlines(keepends=True)[:4]))  # 4 of 6 problems
    metrics = (run / runs.METRICS).read_text()
    (run / runs.METRICS).write_text(metrics[: metrics.rstrip("\n").rfind("\n") + 20])  # a row cut mid-line
    lines = metrics.count("\n")

    files = tables.read_run(outputs, sft_name)
    assert files.state == "incomplete"
    assert [d.file for d in files.broken] == [f"eval/{DATASET}/cot.jsonl", "metrics.jsonl"]
    at = open_app(monkeypatch, outputs)
    table = at.dataframe[1].value.set_index("run")
    assert table.loc[sft_name, "status"] == f"incomplete: eval/{DATASET}/cot.jsonl, metrics.jsonl"
    assert table.loc[_dpo_name(app_outputs), "status"] == "finished"

    at.switch_page("fastmath/app/pages/run.py").run()
    _widget(at, "selectbox", "Run").set_value(sft_name).run()
    assert {m.label: m.value for m in at.metric}["Status"] == "incomplete"  # not "finished"
    assert f"metrics.jsonl ends cut off at line {lines}: it is incomplete" in at.warning[0].value

    at.switch_page("fastmath/app/pages/problems.py").run()
    _widget(at, "selectbox", "Run").set_value(sft_name).run()
    _widget(at, "selectbox", "Strategy").set_value("cot").run()
    assert [w.value for w in at.warning] == [
        f"eval/{DATASET}/cot.jsonl holds 4 of the 6 problems its summary counted: it is incomplete"
    ]
    assert {m.label: m.value for m in at.metric}["Correct"].endswith("/ 4")


def test_leaderboard_says_when_the_best_is_a_tie_or_inside_overlapping_intervals(tmp_path):
    made = [("sft-a", 30, 39), ("grpo-b", 30, 10), ("dpo-c", 36, 8)]  # correct of 40 on gsm8k, then on svamp
    for day, (name, gsm8k, svamp) in enumerate(made, start=1):
        meta = {"stage": name.split("-")[0], "base_model": "/m/model", "status": "finished"}
        atomic_write_json(tmp_path / name / "run.json", {**meta, "started": f"2026-01-0{day}"})
        _eval_summary(tmp_path / name, "gsm8k", "cot", gsm8k, 40)
        _eval_summary(tmp_path / name, "svamp", "cot", svamp, 40)
    lead = tables.leaderboard(tmp_path).set_index("dataset · strategy")["lead"]
    assert lead["svamp · cot"] == "+72.5 pp over grpo-b"  # 97.5% (87.1–99.6) against 25.0% (14.2–40.2)
    assert lead["gsm8k · cot"] == "+15.0 pp over grpo-b: 95% intervals overlap, not significant"
    atomic_write_json(tmp_path / "dpo-c" / "eval" / "gsm8k" / "summary.json", {})  # now grpo-b leads, tied
    board = tables.leaderboard(tmp_path).set_index("dataset · strategy")
    assert board.loc["gsm8k · cot", "best run"] == "grpo-b"  # the newest of the two
    assert board.loc["gsm8k · cot", "lead"] == "tie with sft-a"


def test_every_recipe_key_has_its_chinese_help():
    from fastmath import config
    from fastmath.app.help_zh import HELP_ZH

    every = [name for name, _, _ in config.keys(tuple(config.sections()))]
    assert sorted(set(every) - set(HELP_ZH)) == [] and sorted(set(HELP_ZH) - set(every)) == []
    field = next(f for f in jobs.fields("sft") if f.name == "lora.dropout")
    assert ui.key_help(field) == "dropout on the LoRA input (in [0, 1))"  # English: the recipe's own


def test_a_base_models_eval_target_reads_in_chinese(monkeypatch, app_outputs):
    at = open_app(monkeypatch, app_outputs)
    _widget(at, "radio", "Language · 语言").set_value("中文").run()
    at.switch_page("fastmath/app/pages/train.py").run()
    command = _widget(at, "selectbox", "命令")
    command.set_value(next(o for o in command.options if o.startswith("eval: "))).run()
    targets = _widget(at, "selectbox", "要评测的模型").options
    assert any(o.startswith("基础模型：") for o in targets) and not any("base model" in o for o in targets), targets
