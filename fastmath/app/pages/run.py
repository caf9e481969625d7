"""Run: one run's recipe, training curves (DPO rewards too) and eval results with 95% intervals."""

import streamlit as st
import yaml

from fastmath import export, runs
from fastmath.app import tables, ui

st.title("Run")
root = ui.outputs()
names = tables.run_names(root)
if not names:
    st.info(f"No runs in {root} yet.")
    st.stop()
name = ui.choose("Run", names[::-1], key="run")
run = tables.run_dir(root, name)
meta, final = runs.read(run), tables.summary(run)

cols = st.columns(4)
cols[0].metric("Stage", meta.get("stage", "?"))
cols[1].metric("Status", meta.get("status", "?"))
cols[2].metric("Final loss", f"{final['final_loss']:.4f}" if final.get("final_loss") is not None else "—")
cols[3].metric("Trained tokens", f"{final['trained_tokens']:,}" if final.get("trained_tokens") is not None else "—")
st.caption(
    f"base model `{meta.get('base_model', '?')}` · parent `{meta.get('parent') or '—'}` · "
    f"started {meta.get('started', '?')} · finished {meta.get('finished') or '—'}"
)

curves, evals, recipe, figures, exported = st.tabs(["Curves", "Evaluation", "Recipe", "Summary", "Export"])
with curves:
    frame = tables.metrics(run)
    if frame.empty:
        st.info("No metrics logged yet (metrics.jsonl is written every `training.logging_steps`).")
    charts = {
        "Loss": ["loss"],
        "Learning rate": ["learning_rate"],
        "DPO rewards": ["rewards/chosen", "rewards/rejected"],
        "DPO reward margin and accuracy": ["rewards/margins", "rewards/accuracies"],
    }
    for title, columns in charts.items():
        present = [c for c in columns if c in frame]
        if present:
            st.subheader(title)
            st.line_chart(frame[present].dropna(how="all"), x_label="step")
with evals:
    table = tables.eval_table(run)
    if table.empty:
        st.info(f"Not evaluated yet: `python -m fastmath eval --lora {run.name} ...` writes {run.name}/eval/.")
    else:
        percent = st.column_config.NumberColumn(format="%.1f")
        st.dataframe(table, hide_index=True, column_config={c: percent for c in table.columns if "%" in c})
        st.caption("Accuracy with its 95% confidence interval; rates in % of the problems.")
with recipe:
    resolved = tables.recipe(run)
    if resolved:
        st.code(yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True), language="yaml")
    else:
        st.info("This run has no recipe.yaml (a base-model evaluation).")
with figures:
    st.json(final or {"summary": "not written yet: the run has not finished"})
with exported:
    if not (run / runs.ADAPTER).is_file():
        st.info("No adapter to export (a base-model run).")
    else:
        st.code("\n".join(export.export_command(run, fmt) for fmt in export.FORMATS), language="bash")
        made = export.exports(run)
        if made:
            st.dataframe(made, hide_index=True)
        else:
            st.info("Not exported yet: run a command above (`--help` lists every quant).")
