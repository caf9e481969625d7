"""Runs: every run in the outputs directory, its training figures and accuracy on every eval."""

import streamlit as st

from fastmath.app import tables, ui

st.title("Runs")
root = ui.outputs()
table = tables.runs_table(root)
if table.empty:
    st.info(f"No runs in {root} yet: `make quickstart` trains one on the CPU in minutes.")
    st.stop()

fixed = {"run", "stage", "base model", "parent", "started", "status", "final loss", "trained tokens"}
st.dataframe(
    table,
    hide_index=True,
    column_config={
        "final loss": st.column_config.NumberColumn(format="%.4f"),
        "trained tokens": st.column_config.NumberColumn(format="localized"),
        **{c: st.column_config.NumberColumn(c, format="%.1f%%") for c in table.columns if c not in fixed},
    },
)
st.caption("Accuracy columns are `dataset · strategy`, in %. Open a run on the Run page.")

names = table["run"].tolist()
selected = ui.choose_many("Runs to compare", names, key="compare", default=names[-2:])
if st.button("Compare these runs", disabled=len(selected) < 2):
    st.switch_page(ui.page("compare"))
