"""Solve: a new problem, answered by a base model (+ an adapter from the runs), streamed as it comes.

Stop works through Streamlit itself: pressing any button while the answer streams starts a
new run of this script, which interrupts the loop below; the `finally` stops the model.
"""

import streamlit as st

from fastmath import runs
from fastmath.app import tables, ui
from fastmath.config import STRATEGY_NAMES, EvalConfig
from fastmath.errors import FastmathError

DEFAULT_STRATEGY = "zero_shot"  # the prompt SFT trains on

NO_ADAPTER = "(none: the base model alone)"

st.title("Solve")
root = ui.outputs()
bases = tables.base_models(root)
if not bases:
    st.info(f"No runs in {root} to take a model from: `make quickstart` trains one.")
    st.stop()

cols = st.columns(3)
with cols[0]:
    base = ui.choose("Base model", bases, key="solve_base")
adapters = [n for n in tables.adapter_runs(root)[::-1] if runs.read(root / n).get("base_model") == base]
with cols[1]:
    adapter = ui.choose("Adapter", [*adapters, NO_ADAPTER], key="solve_adapter")
with cols[2]:
    strategy = ui.choose(
        "Strategy",
        list(STRATEGY_NAMES),
        key="solve_strategy",
        default=DEFAULT_STRATEGY,
    )
question = st.text_area("Problem (English or Chinese)", key="solve_question", height=120)
with st.expander("Generation settings"):
    max_new_tokens = st.slider("Max new tokens", 16, 2048, 512, step=16, key="solve_max_new_tokens")
    timeout_s = st.number_input("Time limit (seconds)", 0.1, 3600.0, 300.0, key="solve_timeout")

cols = st.columns([1, 1, 6])
solve = cols[0].button("Solve", type="primary")
cols[1].button("Stop", help="stop the answer being written")
out = st.empty()


def show_result(solution) -> None:
    """The completion with its answer marked, and the answer, or why there is none."""
    with out.container():
        ui.show_completion(solution.text, solution.pred)
        if not solution.done:
            st.warning("Stopped before the model finished.")
        elif solution.pred is None:
            st.warning("The model gave no number as its answer.")
        else:
            st.success(f"Answer: {solution.pred}")


if solve:
    model, tokenizer, system = ui.cached_model(
        base, None if adapter == NO_ADAPTER else str(tables.run_dir(root, adapter))
    )
    from fastmath.eval.prompting import Setup  # after cached_model activated the backend
    from fastmath.eval.solve import Solution

    setup = Setup(model, tokenizer, EvalConfig(max_new_tokens=max_new_tokens), system=system)
    solution = Solution(setup, question, strategy, timeout_s)
    st.session_state["solve_solution"] = solution
    try:
        for _ in solution:
            out.text(solution.text + " ▌")
    except FastmathError as e:
        del st.session_state["solve_solution"]
        out.text(solution.text)
        st.error(str(e))
    else:
        show_result(solution)
    finally:
        solution.stop()
elif "solve_solution" in st.session_state:  # a rerun (Stop, a changed setting): show the last answer
    show_result(st.session_state["solve_solution"])
