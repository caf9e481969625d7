"""Compare: accuracy of several runs side by side, what their recipes change, their loss curves."""

import streamlit as st

from fastmath.app import tables, ui
from fastmath.app.i18n import t

st.title(t("Compare"))
root = ui.outputs()
names = tables.run_names(root)
selected = ui.choose_many("Runs", names, key="compare", default=tables.compare_default(root))
if not selected:
    st.info(t("Pick runs to compare."))
    st.stop()

st.subheader(t("Accuracy"))
matrix = tables.accuracy_matrix(root, selected)
if matrix.columns.empty:
    st.info(t("None of these runs has been evaluated yet."))
else:
    ui.table(matrix, hide_index=False)
    st.caption(t("Accuracy (95% interval) of each run on each dataset · strategy; — where not evaluated."))

st.subheader(t("Recipe differences"))
recipes = {}
for name in selected:
    with ui.errors_as_messages():  # a run whose recipe cannot be read is left out, named
        recipes[name] = tables.recipe(tables.run_dir(root, name))
stages = {name: tables.read_run(root, name).meta.get("stage") for name in selected}
diff = tables.recipe_diff({name: (stages[name], recipe) for name, recipe in recipes.items() if recipe}, t)
if diff.empty:
    st.info(t("The recipes are identical.") if len(diff.columns) > 1 else t("Pick a second run to see what differs."))
else:
    ui.table(diff, hide_index=False, column_config={"_index": st.column_config.TextColumn(width="medium")})
    st.caption(t("Only the keys each run's stage reads, only where they differ."))
without = [name for name, recipe in recipes.items() if not recipe]
if without:
    st.caption(t("No recipe (a base model), not in the table: {runs}.").format(runs=", ".join(without)))

st.subheader(t("Training loss"))
curves, unreadable = tables.loss_curves(root, selected)
for name, damage in unreadable:
    st.warning(f"{name}: {ui.damage_text(damage)}")
if curves.empty:
    st.info(t("No loss logged by these runs."))
else:
    ui.line_chart(curves, "run", t("loss"), height=360, log_if_spread=True)
