"""Runs: the leaderboard first (the best run of each dataset · strategy), then every run; a row opens its run."""

import streamlit as st

from fastmath.app import tables, ui
from fastmath.app.i18n import t

st.title(t("Runs"))
root = ui.outputs()
names = tables.run_names(root)
if not names:
    st.info(t("No runs in {root} yet: `make quickstart` trains one on the CPU in minutes.").format(root=root.name))
    st.stop()

st.subheader(t("Leaderboard"))
board = tables.leaderboard(root, t)
if board.empty:
    st.info(t("Nothing evaluated yet: start an evaluation on the Train page, or `python -m fastmath eval`."))
else:
    chosen = ui.table(board, key="leaderboard", on_select="rerun", selection_mode="single-row")
    st.caption(
        t(
            "The best run of each dataset · strategy: accuracy with its 95% interval; its lead over the "
            "next run (a tie, or a lead inside overlapping 95% intervals, is not a real lead); its gain in "
            "percentage points over its parent run and over its base model on the same problems. "
            "Click a row to open the run."
        )
    )
    if chosen.selection.rows:
        ui.open_run(board["best run"].iloc[chosen.selection.rows[0]])

benchmarks = tables.benchmark_board(root)
if not benchmarks.empty:
    st.subheader(t("Benchmarks side by side"))
    ui.table(benchmarks)
    st.caption(t("Each run · strategy evaluated on several benchmarks (`fastmath suite`): accuracy (95% interval)."))

st.subheader(t("All runs"))
every = tables.runs_table(root, t)
chosen = ui.table(every, key="all_runs", on_select="rerun", selection_mode="single-row")
st.caption(t("Accuracy columns are `dataset · strategy`: accuracy (95% interval). Click a row to open the run."))
if chosen.selection.rows:
    ui.open_run(every["run"].iloc[chosen.selection.rows[0]])

selected = ui.choose_many("Runs to compare", names, key="compare", default=tables.compare_default(root))
if st.button(t("Compare these runs"), disabled=len(selected) < 2):
    st.switch_page(ui.page("compare"))
