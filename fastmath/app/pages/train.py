"""Train: start a stage from a recipe, its keys in a form; watch it, stop it, resume it.

What starts is the command a user would type, shown before it starts; it runs as its own process,
so it outlives the page and the app (`jobs`).
"""

import time
from pathlib import Path

import streamlit as st

from fastmath import cli, runs
from fastmath.app import eval_defaults, jobs, tables, ui
from fastmath.app.i18n import t
from fastmath.errors import FastmathError

NO_RECIPE = "(none: the keys' defaults)"
ACTIVE = ("running", "stopping")

st.title(t("Train"))
root, cwd = ui.outputs(), Path.cwd()


def target_label(target: str) -> str:
    """A run's name as it is; a base model's label in the interface's language."""
    model = target.removeprefix(tables.BASE_TARGET)
    return t("base model: {model}").format(model=model) if model != target else target


def start_form() -> None:
    """Command, recipe, every key the stage reads as a typed widget; the exact command; Start."""
    cols = st.columns([2, 1, 1])
    commands = jobs.commands()
    command = cols[0].selectbox(
        t("Command"), commands, key="train_command", persist_state="session",
        format_func=lambda c: f"{c}: {t(cli.COMMANDS[c].help)}",
    )  # fmt: skip
    recipes, shipped = jobs.recipes(cwd), jobs.default_recipe(command)
    options = list(recipes) if shipped else [NO_RECIPE, *recipes]
    label = cols[1].selectbox(
        t("Recipe"), options, index=options.index(shipped) if shipped in options else 0,
        key=f"train_recipe_{command}", persist_state="session", format_func=t,
    )  # fmt: skip
    flags: tuple[str, ...] = ()
    recipe = recipes.get(label)
    defaults, suggested, overrides = jobs.defaults(command, recipe), {}, {}
    if command == "eval":
        targets = tables.eval_targets(root)
        if not targets:
            st.info(t("Nothing to evaluate yet: train a run first."))
            return
        target = cols[2].selectbox(
            t("Model to evaluate"), list(targets), key="train_target", persist_state="session", format_func=target_label
        )
        flags = targets[target]
        if flags[0] == "--lora":  # the run's own model, and the data and strategies its relatives were evaluated on
            defaults |= {k: v for k, v in eval_defaults.model_keys(root, flags[1]).items() if k in defaults}
            suggested = eval_defaults.for_run(root, flags[1])
            st.caption(t("Evaluated as its relatives were, so that it lands in their leaderboard rows."))
    fields, sft_runs = jobs.fields(command), tables.finished_runs(root, "sft")
    sections = list(dict.fromkeys(f.name.partition(".")[0] for f in fields))
    for tab, section in zip(st.tabs(sections), sections, strict=True):
        with tab:
            cols = st.columns(3)
            for i, field in enumerate(f for f in fields if f.name.startswith(f"{section}.")):
                with cols[i % 3]:
                    key = f"train:{command}:{label}:{' '.join(flags)}:{field.name}"
                    value = ui.key_input(field, suggested.get(field.name, defaults[field.name]), key, runs=sft_runs)
                if value != defaults[field.name]:
                    overrides[field.name] = value
    st.caption(t("Only the keys you change are passed on the command line; the recipe gives the rest."))

    # The run's name is picked once per form, so the command shown is the command that starts.
    stamp = st.session_state.setdefault("train_stamp", time.strftime("%Y%m%d-%H%M%S"))
    try:
        plan = jobs.plan(root, command, recipe, overrides, flags, stamp)
    except FastmathError as e:
        plan = None
        st.error(str(e))
    values = {**defaults, **overrides}
    if jobs.needs_gpu(values):
        st.warning(t(jobs.GPU_WARNING).format(model=values.get("model.name")))
    shown = plan.shell if plan else t("(fix the message above to see the command)")
    with st.container(key="train_preview"):  # the exact command Start runs
        st.code(shown, language="bash", wrap_lines=True)
    if st.button(t("Start"), type="primary", disabled=plan is None, key="train_start") and plan is not None:
        job = jobs.start(root, plan, cwd)
        del st.session_state["train_stamp"]
        st.session_state["train_job"] = job.name
        st.rerun()


def resume_help(run: Path) -> str:
    """What Resume does, exactly: the checkpoint it continues from, or a new start where none was saved."""
    checkpoint = runs.last_checkpoint(run)
    if checkpoint is None:
        return t("No checkpoint was saved: it trains again from step 1.")
    step = checkpoint.name.rpartition("-")[2]
    return t("Continues from checkpoint-{step}: its step {step} is done.").format(step=step)


def watch(name: str) -> bool:
    """One job: its state, its run's progress and loss while it trains, its log; Stop or Resume."""
    found = [j for j in jobs.load(root) if j.name == name]
    if not found:
        st.info(t("This job's record is gone."))
        return False
    job = found[0]
    st.markdown(f"**{job.run_name}** · `{job.command}` · {t(job.state)}")
    # Stop and Resume come before the chart: the chart appears with the first logged loss, and a
    # button drawn below it would leave the page for a moment at that redraw (a click then landing
    # on Streamlit's own "Stop", of the page's script, in the header).
    if job.state == "running":
        st.button(t("Stop"), key="train_stop", on_click=jobs.stop, args=(root, job))
    elif job.state == "stopping":
        st.caption(t("Stopping: Ctrl-C was sent; a training run finishes its current step, saves a checkpoint of it "
                     "and ends (Resume continues from that step)."))  # fmt: skip
        late = t("One still running {seconds} s later is ended without a checkpoint.")
        st.caption(late.format(seconds=int(jobs.GRACE_S)))
    elif jobs.resumable(root, job) and st.button(t("Resume"), key="train_resume", help=resume_help(Path(job.run))):
        resumed = jobs.start(root, jobs.resume_plan(root, job.run_name), cwd)
        st.session_state["train_job"] = resumed.name
        st.rerun()
    if job.command in jobs.TRAINING:
        ui.progress(Path(job.run), job.state)
        loss = tables.metric_series(tables.metrics(Path(job.run)), ["loss"])
        if not loss.empty:
            ui.line_chart(loss, "series", t("loss"))
    if job.state in ("failed", "crashed", "ended") and not jobs.started_its_run(job):  # never resumable
        st.error(t("The command ended before it began: nothing was made and no run was left behind. Its log:"))
    log = tables.log_tail(jobs.log_folder(root, job), lines=15)
    st.code(log or t("(no output yet)"), language=None, wrap_lines=True)
    return job.state in ACTIVE


found = jobs.load(root)
if found:  # the job being watched first: after Start, the new job is at the top of the page
    st.subheader(t("Jobs"))
    by_name = {j.name: j for j in found}

    def job_label(name: str) -> str:
        job = by_name[name]
        return f"{job.run_name} · {job.command} · {t(job.state)} · {job.started.replace('T', ' ')}"

    chosen = ui.choose("Job", list(by_name), key="train_job", format_func=job_label)
    ui.live(lambda: watch(chosen), by_name[chosen].state in ACTIVE, key="train_watch")

st.subheader(t("Start a run"))
if not found and not tables.run_names(root):
    hint = t("No runs yet: the form below starts from {recipe}.").format(recipe=jobs.default_recipe("sft"))
    if not jobs.has_gpu():
        hint += " " + t("The tiny recipes train the quickstart's tiny model (`make quickstart` builds it) on a CPU.")
    st.info(hint)
with ui.errors_as_messages():
    start_form()
