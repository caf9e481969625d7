"""Problems: one eval problem by problem: what went wrong, searchable, and side by side with another."""

import pandas as pd
import streamlit as st

from fastmath.app import tables, ui
from fastmath.app.i18n import t

# Why a model stopped writing (the eval's `finish_reason`), as the page says it.
FINISH_REASONS = {"stop": "ended its answer", "length": "cut off at the token limit"}

st.title(t("Problems"))
root = ui.outputs()
evaluated = [name for name in tables.run_names(root)[::-1] if tables.datasets(root / name)]
if not evaluated:
    none_yet = t("No evaluations in {root} yet: start one on the Train page, or `python -m fastmath eval`.")
    st.info(none_yet.format(root=root.name))
    st.stop()

cols = st.columns(3)
with cols[0]:
    name = ui.choose("Run", evaluated, key="problems_run", default=tables.best_run(root))  # what the best gets wrong
run = tables.run_dir(root, name)
with cols[1]:
    dataset = ui.choose("Dataset", tables.datasets(run), key="problems_dataset")
with cols[2]:
    strategy = ui.choose("Strategy", tables.strategies(run, dataset), key="problems_strategy")
if strategy is None:
    st.info(t("{run} has no per-problem results for {dataset}.").format(run=name, dataset=dataset))
    st.stop()
rows, damage = tables.problems(run, dataset, strategy)
if damage:
    st.warning(ui.damage_text(damage))

st.subheader(t("Error breakdown"))
correct = sum(r["kind"] == "correct" for r in rows)
cols = st.columns(4)
cols[0].metric(t("Correct"), f"{correct} / {len(rows)}")
for col, (kind, count) in zip(cols[1:], tables.error_breakdown(rows).items(), strict=True):
    col.metric(t(kind.capitalize()), count)

st.subheader(t("Problem by problem"))
# The outcome filter has the row to itself: in a column beside the search its chips were cut at 800 px.
kinds = ui.choose_many("Outcome", tables.KINDS, key="problems_kinds", default=tables.ERROR_KINDS)
text = st.text_input(t("Search"), key="problems_search", placeholder=t("words of the question or completion, or an id"))
shown = tables.filter_problems(rows, kinds, text)
st.caption(t("{shown} of {total} problems").format(shown=len(shown), total=len(rows)))
columns = ["id", "kind", "gold", "pred", "tokens", "question"]
listed = pd.DataFrame([{c: r.get(c) for c in columns} for r in shown], columns=columns).fillna(tables.MISSING)
ui.table(listed.assign(kind=listed["kind"].map(t)))
if not shown:
    st.stop()

by_id = {r["id"]: r for r in shown}
problem = ui.choose(
    "Problem", list(by_id), key="problems_id", format_func=lambda i: f"{i}: {by_id[i]['question'][:90]}"
)
row = by_id[problem]
st.text(row["question"])
st.markdown(f"**{t('Gold answer')}:** `{row['gold']}`")


def show(result: dict, title: str) -> None:
    """One model's answer to the problem: outcome, extracted answer (highlighted), length."""
    pred = result.get("pred")
    answered = t("answered {pred}").format(pred=f"`{pred}`") if pred is not None else t("no answer")
    st.markdown(f"**{title}**: {t(result['kind'])}, {answered}")
    ui.show_completion(result.get("completion", ""), pred)
    details = t("{tokens} tokens; {reason}")
    missing = tables.MISSING
    code = str(result.get("finish_reason", missing))
    reason = t(FINISH_REASONS.get(code, code))
    st.caption(details.format(tokens=result.get("tokens", missing), reason=reason))


others = [
    (other, s)
    for other in evaluated
    if dataset in tables.datasets(root / other)
    for s in tables.strategies(root / other, dataset)
    if (other, s) != (name, strategy)
]
beside = st.selectbox(
    t("Side by side with"),
    [None, *others],
    format_func=lambda o: t("nothing") if o is None else f"{o[0]} · {o[1]}",
    key="problems_beside",
)
if beside is None:
    show(row, f"{name} · {strategy}")
else:
    left, right = st.columns(2)
    with left:
        show(row, f"{name} · {strategy}")
    with right, ui.errors_as_messages():  # the other run's file is its own: damaged, it marks this column only
        theirs, their_damage = tables.problems(tables.run_dir(root, beside[0]), dataset, beside[1])
        match = [r for r in theirs if r["id"] == problem]
        if their_damage:
            st.warning(ui.damage_text(their_damage))
        if match:
            show(match[0], f"{beside[0]} · {beside[1]}")
        else:
            st.info(t("{other} did not answer problem {id}.").format(other=f"{beside[0]} · {beside[1]}", id=problem))
