"""Run: one run's progress (live while it trains), curves, eval results with 95% intervals, log,
recipe, summary and exports, one tab each; "Evaluate this run" opens Train's eval form on it, and
Export runs `python -m fastmath export` as a job (`jobs`)."""

from pathlib import Path

import streamlit as st
import yaml

from fastmath import export, runs
from fastmath.app import jobs, tables, ui
from fastmath.app.i18n import t

st.title(t("Run"))
root = ui.outputs()
names = tables.run_names(root)
if not names:
    st.info(t("No runs in {root} yet.").format(root=root.name))
    st.stop()
name = ui.choose("Run", names[::-1], key="run", default=tables.default_run(root))
run = tables.run_dir(root, name)
files = tables.read_run(root, name)
meta, running = files.meta, files.status == "running"


def overview() -> bool:
    """Status and progress, read afresh: the view refreshes itself while the run trains."""
    now = tables.read_run(root, name)
    if now.meta.get("stage") == "base":
        st.metric(t("Status"), t(now.state))
    else:
        ui.progress(run, now.state)
    return now.status == "running"


ui.live(overview, running, key="run_overview")
st.caption(
    f"{t('stage')} `{meta.get('stage', tables.MISSING)}` · "
    f"{t('base model')} `{tables.model_label(meta.get('base_model')) or tables.MISSING}` · "
    f"{t('parent')} `{meta.get('parent') or tables.MISSING}` · "
    f"{t('started')} {str(meta.get('started') or tables.MISSING).replace('T', ' ')} · "
    f"{t('finished')} {str(meta.get('finished') or tables.MISSING).replace('T', ' ')}"
)
if files.broken:
    damage = "; ".join(ui.damage_text(d) for d in files.broken)
    st.warning(t("Some files of this run are damaged: {files}").format(files=damage))
if files.status in ("stopped", "failed", "crashed"):
    reason = meta.get("error") or t("the process ended without saying why")
    ended = t("This run {status}: {reason}. The Train page can resume it.")
    st.warning(ended.format(status=t(files.status), reason=reason))

curves, evals, logs, recipe, figures, exported = st.tabs(
    [t("Curves"), t("Evaluation"), t("Log"), t("Recipe"), t("Summary"), t("Export")]
)
with curves:

    def draw_curves() -> bool:
        frame = tables.metrics(run)
        if meta.get("stage") == "base":
            st.info(t("A base model is not trained: it has no curves."))
        elif frame.empty:
            st.info(t("No metrics logged yet (metrics.jsonl is written every `training.logging_steps`)."))
        ui.curves(frame)
        return tables.read_run(root, name).status == "running"

    ui.live(draw_curves, running, key="run_curves")
with evals, ui.errors_as_messages():
    evaluable = files.status == "finished" and (run / runs.ADAPTER).is_file()
    evaluate = t("Evaluate this run")
    if evaluable and st.button(evaluate, key="run_evaluate", help=t("the Train page's eval form, on this run")):
        st.session_state["train_command"], st.session_state["train_target"] = "eval", name
        st.switch_page(ui.page("train"))
    table = tables.eval_table(run)
    if table.empty:
        st.info(t("Not evaluated yet: start an evaluation of {run} on the Train page.").format(run=name))
    else:
        percent = st.column_config.NumberColumn(format="%.1f")
        ui.table(table, column_config={c: percent for c in table.columns if "%" in c})
        st.caption(t("Accuracy with its 95% confidence interval; rates in % of the problems."))
with logs:

    def draw_log() -> bool:
        text = tables.log_tail(run, lines=200)
        if text:
            with st.container(height=480, autoscroll=True):  # its end in view, where a log grows
                st.code(text, language=None, wrap_lines=True)
        else:
            st.info(t("No log: the app keeps the output of the commands it starts; this run was started elsewhere."))
        return tables.read_run(root, name).status == "running"

    ui.live(draw_log, running, key="run_log")
with recipe, ui.errors_as_messages():
    resolved = tables.recipe(run)
    if resolved:
        st.code(yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True), language="yaml")
    else:
        st.info(t("This run has no recipe.yaml (a base-model evaluation)."))
with figures, ui.errors_as_messages():
    if files.summary:
        st.json(files.summary)
    elif damaged := files.damaged(runs.SUMMARY):
        st.error(ui.damage_text(damaged))
    elif meta.get("stage") == "base":
        st.info(t("A base model is evaluated, not trained: it has no training summary."))
    else:
        unfinished = t("summary.json is written when the run finishes; this run is {status}.")
        st.info(unfinished.format(status=t(files.status)))
with exported, ui.errors_as_messages():
    if not (run / runs.ADAPTER).is_file():
        st.info(t("No adapter to export (a base-model run)."))
    elif files.status != "finished":
        st.info(t("A run is exported once it has finished; this run is {status}.").format(status=t(files.status)))
    else:
        fmt = st.radio(t("Format"), export.FORMATS, horizontal=True, key="run_export_format")
        with ui.errors_as_messages():
            plan = jobs.export_plan(root, name, fmt)
            st.code(plan.shell, language="bash", wrap_lines=True)
            again = "--force" in plan.argv
            if st.button(t("Export again (replaces it)") if again else t("Export"), key="run_export"):
                st.session_state[f"export_job:{name}"] = jobs.start(root, plan, Path.cwd()).name

        def draw_export() -> bool:
            """The export job's state and log while it runs; then the files it wrote, with their sizes."""
            job = next((j for j in jobs.load(root) if j.name == st.session_state.get(f"export_job:{name}")), None)
            if job is not None:
                st.markdown(f"`export` · {t(job.state)}")
                if job.state == "running" or job.state == "failed":
                    st.code(tables.log_tail(jobs.log_folder(root, job), lines=8), language=None, wrap_lines=True)
            written = jobs.exported_files(root, name, fmt)
            if written:
                folder = runs.export_dir(run, fmt, export.DEFAULT_QUANT[fmt])
                st.caption(t("Written to {folder}:").format(folder=f"`{folder}`"))
                st.dataframe(written, hide_index=True)
            return job is not None and job.state == "running"

        exporting = st.session_state.get(f"export_job:{name}")
        busy = any(j.name == exporting and j.state == "running" for j in jobs.load(root))
        ui.live(draw_export, busy, key="run_export_job")
        made = export.exports(run)
        if made:
            st.dataframe(made, hide_index=True)
        else:
            st.info(t("Not exported yet: Export runs the command above (`--help` lists every quant)."))
