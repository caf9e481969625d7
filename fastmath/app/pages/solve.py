"""Solve: a new problem, answered by a base model (+ an adapter from the runs), shown as it is written.

The answer is written on its own thread (`ui.Writing`) and this page redraws it every half second,
so the page is never busy waiting on the model: one Stop button, the page's own, stops it.
"""

import streamlit as st

from fastmath import runs
from fastmath.app import tables, ui
from fastmath.app.i18n import t
from fastmath.config import EvalConfig, strategy_names
from fastmath.errors import FastmathError
from fastmath.grading import extract_answer

DEFAULT_STRATEGY = "zero_shot"  # the prompt SFT trains on
NO_ADAPTER = "(none: the base model alone)"
WRITING = "solve_writing"

st.title(t("Solve"))
root = ui.outputs()
bases = tables.base_models(root)
if not bases:
    st.info(t("No runs in {root} to take a model from: `make quickstart` trains one.").format(root=root.name))
    st.stop()

# By default the leaderboard's best run: its base model, and its adapter unless it is the base model itself.
best = tables.best_run(root)
best_meta = runs.read(root / best) if best else {}
cols = st.columns(3)
with cols[0]:
    base = ui.choose("Base model", bases, key="solve_base", default=best_meta.get("base_model"),
                     format_func=tables.model_label)  # fmt: skip
adapters = [n for n in tables.adapter_runs(root)[::-1] if runs.read(root / n).get("base_model") == base]
with cols[1]:
    adapter = ui.choose("Adapter", [*adapters, NO_ADAPTER], key="solve_adapter",
                        default=NO_ADAPTER if best_meta.get("stage") == "base" else best, format_func=t)  # fmt: skip
with cols[2]:
    strategy = ui.choose("Strategy", list(strategy_names()), key="solve_strategy", default=DEFAULT_STRATEGY)
question = st.text_area(t("Problem (English or Chinese)"), key="solve_question", height=120)
expected = st.text_input(t("Expected answer (optional)"), key="solve_expected",
                         help=t("give it and the answer is checked: right or wrong"))  # fmt: skip
gold = extract_answer(expected) if expected.strip() else None
if expected.strip() and gold is None:
    st.warning(t("The expected answer holds no number; the answer is not checked."))
with st.expander(t("Generation settings")):
    max_new_tokens = st.slider(t("Max new tokens"), 16, 2048, 512, step=16, key="solve_max_new_tokens")
    timeout_s = st.number_input(t("Time limit (seconds)"), 0.1, 3600.0, 300.0, key="solve_timeout")

writing = st.session_state.get(WRITING)
solve = st.button(t("Solve"), type="primary")
if solve and not question.strip():  # refused before the model loads
    st.error(t("The problem is empty: type a math problem first."))
elif solve:
    if writing is not None:
        writing.stop()
    model, tokenizer, system = ui.cached_model(
        base, None if adapter == NO_ADAPTER else str(tables.run_dir(root, adapter))
    )
    from fastmath.eval.prompting import Setup  # after cached_model activated the backend
    from fastmath.eval.solve import Solution

    setup = Setup(model, tokenizer, EvalConfig(max_new_tokens=max_new_tokens), system=system)
    try:
        writing = st.session_state[WRITING] = ui.Writing(Solution(setup, question, strategy, timeout_s), gold)
    except FastmathError as e:
        st.session_state.pop(WRITING, None)
        writing = None
        st.error(str(e))


def answer() -> bool:
    """The answer so far in a bounded box, Stop while it is written; then how it went, and the prompt."""
    solution, running = writing.solution, writing.running
    ui.show_completion(solution.text, solution.pred, writing=running)
    if running:
        st.button(t("Stop"), key="solve_stop", on_click=writing.stop, help=t("stop the answer being written"))
    elif writing.error:
        st.error(writing.error)
    elif not solution.done:
        st.warning(t("Stopped before the model finished."))
    else:
        outcome = tables.solve_outcome(solution.pred, writing.gold)
        if outcome == "no answer":
            st.warning(t("No answer: the model gave no number as its answer."))
        elif outcome == "right":
            st.success(t("Right: {pred}").format(pred=solution.pred))
        elif outcome == "wrong":
            st.error(t("Wrong: answered {pred}, expected {gold}").format(pred=solution.pred, gold=writing.gold))
        else:
            st.info(t("Answer: {pred}").format(pred=solution.pred))
    if solution.prompt:
        with st.expander(t("The prompt sent to the model")):
            st.code(solution.prompt, language=None, wrap_lines=True)
    return running


if writing is not None:
    ui.live(answer, writing.running, key="solve_answer", every=0.5)
