"""Compare: accuracy of several runs side by side, what their recipes change, their loss curves."""

import streamlit as st

from fastmath.app import tables, ui

st.title("Compare")
root = ui.outputs()
names = tables.run_names(root)
selected = ui.choose_many("Runs", names, key="compare", default=names[-2:])
if not selected:
    st.info("Pick runs to compare.")
    st.stop()

st.subheader("Accuracy (%)")
matrix = tables.accuracy_matrix(root, selected)
if matrix.columns.empty:
    st.info("None of these runs has been evaluated yet.")
else:
    st.dataframe(matrix, column_config={c: st.column_config.NumberColumn(format="%.1f%%") for c in matrix.columns})

st.subheader("Recipe differences")
diff = tables.recipe_diff({name: tables.recipe(tables.run_dir(root, name)) for name in selected})
if diff.empty:
    st.info("The recipes are identical." if len(selected) > 1 else "Pick a second run to see what differs.")
else:
    st.dataframe(diff)

st.subheader("Training loss")
curves = tables.loss_curves(root, selected)
if curves.empty:
    st.info("No loss logged by these tables.")
else:
    st.line_chart(curves, x_label="step", y_label="loss")
