"""Problems: one eval problem by problem: what went wrong, searchable, and side by side with another."""

import pandas as pd
import streamlit as st

from fastmath.app import tables, ui

st.title("Problems")
root = ui.outputs()
evaluated = [name for name in tables.run_names(root)[::-1] if tables.datasets(root / name)]
if not evaluated:
    st.info(f"No evaluations in {root} yet: `python -m fastmath eval ...` writes <run>/eval/.")
    st.stop()

cols = st.columns(3)
with cols[0]:
    name = ui.choose("Run", evaluated, key="problems_run")
run = tables.run_dir(root, name)
with cols[1]:
    dataset = ui.choose("Dataset", tables.datasets(run), key="problems_dataset")
with cols[2]:
    strategy = ui.choose("Strategy", tables.strategies(run, dataset), key="problems_strategy")
if strategy is None:
    st.info(f"{name} has no per-problem results for {dataset}.")
    st.stop()
rows = tables.problems(run, dataset, strategy)

st.subheader("Error breakdown")
correct = sum(r["kind"] == "correct" for r in rows)
cols = st.columns(4)
cols[0].metric("Correct", f"{correct} / {len(rows)}")
for col, (kind, count) in zip(cols[1:], tables.error_breakdown(rows).items(), strict=True):
    col.metric(kind.capitalize(), count)

st.subheader("Problem by problem")
cols = st.columns([1, 2])
with cols[0]:
    kinds = ui.choose_many("Outcome", tables.KINDS, key="problems_kinds", default=tables.ERROR_KINDS)
with cols[1]:
    text = st.text_input("Search", key="problems_search", placeholder="words of the question or completion, or an id")
shown = tables.filter_problems(rows, kinds, text)
st.caption(f"{len(shown)} of {len(rows)} problems")
columns = ["id", "kind", "gold", "pred", "tokens", "question"]
st.dataframe(pd.DataFrame([{c: r.get(c) for c in columns} for r in shown], columns=columns), hide_index=True)
if not shown:
    st.stop()

by_id = {r["id"]: r for r in shown}
problem = ui.choose(
    "Problem", list(by_id), key="problems_id", format_func=lambda i: f"{i}: {by_id[i]['question'][:90]}"
)
row = by_id[problem]
st.text(row["question"])
st.markdown(f"**Gold answer:** `{row['gold']}`")


def show(result: dict, title: str) -> None:
    """One model's answer to the problem: outcome, extracted answer (highlighted), length."""
    st.markdown(f"**{title}**: {result['kind']}, answered `{result.get('pred')}`")
    ui.show_completion(result.get("completion", ""), result.get("pred"))
    st.caption(f"{result.get('tokens', '?')} tokens, finish reason {result.get('finish_reason', '?')}")


others = [
    (other, s)
    for other in evaluated
    if dataset in tables.datasets(root / other)
    for s in tables.strategies(root / other, dataset)
    if (other, s) != (name, strategy)
]
beside = st.selectbox(
    "Side by side with",
    [None, *others],
    format_func=lambda o: "nothing" if o is None else f"{o[0]} · {o[1]}",
    key="problems_beside",
)
if beside is None:
    show(row, f"{name} · {strategy}")
else:
    match = [r for r in tables.problems(tables.run_dir(root, beside[0]), dataset, beside[1]) if r["id"] == problem]
    left, right = st.columns(2)
    with left:
        show(row, f"{name} · {strategy}")
    with right:
        if match:
            show(match[0], f"{beside[0]} · {beside[1]}")
        else:
            st.info(f"{beside[0]} · {beside[1]} did not answer problem {problem}.")
