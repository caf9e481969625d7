"""Commands the app starts (`fastmath.app.jobs`): the exact command line, checked as the CLI checks it;
the process found again after a restart, never confused with another program that reuses its pid;
Stop as Ctrl-C, then SIGTERM for a process that ignores it; a vanished process shown as crashed."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastmath import cli, config, runs
from fastmath.app import jobs, tables
from fastmath.errors import FastmathError
from fastmath.io import atomic_write_json

STAMP = "20260101-120000"


def _training_run(outputs: Path, name: str = "sft-x", status: str = "running") -> Path:
    run = outputs / name
    atomic_write_json(run / runs.RUN_JSON, {"stage": "sft", "status": status, "started": runs.now()})
    return run


def _python(run: Path, code: str) -> jobs.Plan:
    """A job whose process is a small Python program (the process handling is what is tested); it
    takes the run as a stage does (`runs.resume` records its process in run.json)."""
    claim = f"from pathlib import Path\nfrom fastmath import runs\nruns.resume(Path({str(run)!r}))\n"
    return jobs.Plan("sft", (sys.executable, "-c", claim + code), run)


def _until(condition, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _kill(job: jobs.Job) -> None:
    """End a test's process and collect it (the test forgot it as a restarted app would)."""
    try:
        os.killpg(job.pid, signal.SIGKILL)
        os.waitpid(job.pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def test_plan_is_the_exact_command_checked_as_the_cli_checks_it(tmp_path):
    overrides = {"training.max_steps": 30, "lora.target_modules": ["q_proj", "v_proj"], "data.system_prompt": "123"}
    plan = jobs.plan(tmp_path, "sft", "tiny-sft", overrides, stamp=STAMP)
    name = f"sft-tiny-qwen2-{STAMP}"  # the stage, the model's folder and the form's time: known before it runs
    assert plan.argv == (
        sys.executable, "-m", "fastmath", "sft", "tiny-sft", "training.max_steps=30",
        "lora.target_modules=q_proj,v_proj", "data.system_prompt='123'",
        f"training.output_dir={tmp_path}", f"training.run_name={name}",
    )  # fmt: skip
    assert plan.run == tmp_path.resolve() / name
    # as a person types it: a list as a,b (no quotes needed), a string that reads as a number quoted for YAML
    assert plan.shell.startswith(f"{sys.executable} -m fastmath sft tiny-sft training.max_steps=30 ")
    assert " lora.target_modules=q_proj,v_proj " in plan.shell and """ "data.system_prompt='123'" """ in plan.shell
    assert shlex.split(plan.shell) == list(plan.argv)  # what a shell makes of it is the command that runs
    listed = jobs.plan(tmp_path, "sft", "tiny-sft", {"lora.target_modules": ["a, b", "c"], "data.system_prompt": "$1"})
    assert """ "lora.target_modules=['a, b', c]" 'data.system_prompt=$1' """ in listed.shell
    assert shlex.split(listed.shell) == list(listed.argv)
    # what the command will run with is exactly what the form meant, types included
    inv = cli.prepare(cli.COMMANDS["sft"], list(plan.argv[4:]))
    assert (inv.recipe.training.max_steps, inv.recipe.lora.target_modules) == (30, ["q_proj", "v_proj"])
    assert inv.recipe.data.system_prompt == "123" and inv.recipe.training.run_name == name

    for overrides, message in [
        ({"lora.r": 0}, "recipe key 'lora.r' must be >= 1, got 0"),
        ({"training.num_epochs": 0}, "training.num_epochs=0 trains nothing"),
        ({"training.batching": "tight"}, "takes auto, padding_free, packed, padded"),
    ]:
        with pytest.raises(FastmathError, match=message):
            jobs.plan(tmp_path, "sft", "tiny-sft", overrides, stamp=STAMP)
    with pytest.raises(FastmathError, match="no finished sft run"):
        jobs.plan(tmp_path, "dpo", "tiny-dpo")  # DPO continues an SFT run: there is none yet


def test_eval_and_pairs_write_into_the_run_they_read_and_a_run_resumes_as_recorded(overfit_run, tiny_model, tmp_path):
    outputs = overfit_run.parent.resolve()
    lora = jobs.plan(outputs, "eval", None, {"eval.samples": 4}, flags=("--lora", overfit_run.name))
    assert lora.run == overfit_run.resolve() and lora.argv[4:6] == ("--lora", overfit_run.name)
    base = jobs.plan(outputs, "eval", None, {}, flags=("--model", str(tiny_model)))
    assert base.run == runs.base_run_dir(outputs, str(tiny_model)) and not base.run.exists()  # nothing written yet
    pairs = jobs.plan(outputs, "pairs", "tiny-dpo", {"dpo.sft_run": overfit_run.name})
    assert pairs.run == overfit_run.resolve()
    assert jobs.resume_plan(outputs, overfit_run.name).argv == (
        sys.executable, "-m", "fastmath", "sft", "--resume", str(overfit_run.resolve()),
    )  # fmt: skip
    atomic_write_json(tmp_path / "base-x" / runs.RUN_JSON, {"stage": "base", "status": "finished"})
    with pytest.raises(FastmathError, match="not a training run"):
        jobs.resume_plan(tmp_path, "base-x")


def test_the_form_has_every_key_the_stage_reads_typed_with_the_recipes_values():
    fields = {f.name: f for f in jobs.fields("dpo")}
    read = {name for name, _, _ in config.keys(config.stage_sections("dpo"), "dpo")}
    assert set(fields) == read - set(jobs.APP_KEYS)
    kinds = {name: (fields[name].kind, fields[name].nullable) for name in fields}
    assert kinds["lora.r"] == ("int", False) and kinds["dpo.beta"] == ("float", False)
    assert kinds["data.limit"] == ("int", True) and kinds["model.load_in_4bit"] == ("bool", False)
    assert kinds["model.backend"] == ("choice", False) and kinds["lora.target_modules"] == ("list", False)
    assert kinds["dpo.sft_run"] == ("run", True) and kinds["data.system_prompt"] == ("text", True)
    assert fields["lora.r"].help == "LoRA rank (>= 1)"
    assert "training.num_epochs" not in fields and "dpo.num_epochs" in fields  # DPO's own schedule
    assert jobs.fields("eval")[-1].name == "eval.unsafe_no_os_sandbox"
    assert {f.name: f.kind for f in jobs.fields("eval")}["eval.strategies"] == "choices"
    values = jobs.defaults("sft", "tiny-sft")
    assert (values["lora.r"], values["training.batching"], values["data.limit"]) == (64, "padding_free", 16)
    assert jobs.commands() == ["sft", "pairs", "dpo", "grpo", "eval"]  # every stage, in the registry's order
    grpo = {f.name: f.kind for f in jobs.fields("grpo")}
    assert grpo["grpo.sft_run"] == "run" and grpo["grpo.num_generations"] == "int" and "grpo" in jobs.TRAINING


def test_a_job_is_found_again_by_a_new_app_and_a_reused_pid_is_not_it(tmp_path):
    run = _training_run(tmp_path)
    job = jobs.start(tmp_path, _python(run, "import time; time.sleep(60)"), tmp_path)
    try:
        jobs._children.clear()  # an app restarted since: it knows the job from its file alone
        (found,) = jobs.load(tmp_path)
        assert (found.name, found.pid, found.argv, found.state) == (job.name, job.pid, job.argv, "running")
        _until(lambda: "process" in runs.read(run))
        assert runs.status(run) == "running" and tables.read_run(tmp_path, run.name).state == "running"
        assert (run / runs.LOG).read_text().startswith(f"\n$ {sys.executable} -c ")  # the command heads its log
        with pytest.raises(FastmathError, match="sft-x already has a command running"):
            jobs.start(tmp_path, _python(run, "pass"), tmp_path)
        # the same pid running another command line is another program that got the pid: not this job
        path = tmp_path / jobs.JOBS / f"{job.name}.json"
        record = json.loads(path.read_text())
        path.write_text(json.dumps({**record, "argv": [*record["argv"][:-1], "import time; time.sleep(61)"]}))
        assert jobs.load(tmp_path)[0].state == "crashed"
        assert runs.status(run) == "running", "the run's own process still writes it"
    finally:
        _kill(job)


def test_a_training_job_that_vanished_is_crashed_and_one_stopped_early_is_stopped(tmp_path):
    run = _training_run(tmp_path)
    job = jobs.start(tmp_path, _python(run, "pass"), tmp_path)
    _until(lambda: jobs.load(tmp_path)[0].state != "running")
    assert jobs.load(tmp_path)[0].state == "finished"  # this app saw it exit 0
    jobs._children.clear()
    path = tmp_path / jobs.JOBS / f"{job.name}.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "returncode": None}))  # as if no app had seen it end
    assert jobs.load(tmp_path)[0].state == "crashed"  # its run still says running: it died without saying so
    assert runs.status(run) == "crashed" and tables.read_run(tmp_path, run.name).state == "crashed"
    path.write_text(json.dumps({**json.loads(path.read_text()), "stop_requested": runs.now()}))
    assert jobs.load(tmp_path)[0].state == "stopped"


def test_stop_is_ctrl_c_then_sigterm_for_a_process_that_ignores_it(tmp_path):
    run = _training_run(tmp_path)
    code = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nprint('READY'.lower())\ntime.sleep(60)"
    job = jobs.start(tmp_path, _python(run, code), tmp_path)
    try:
        _until(lambda: "\nready\n" in (run / runs.LOG).read_text())  # SIGINT is ignored from here on
        jobs.stop(tmp_path, job, grace_s=0.5)
        assert jobs.load(tmp_path)[0].state == "stopping"
        _until(lambda: runs.read(run).get("status") == "stopped", seconds=10)
        assert jobs.load(tmp_path)[0].state == "stopped" and runs.read(run)["error"] == "interrupted"
        assert jobs.load(tmp_path)[0].returncode == -signal.SIGTERM
    finally:
        _kill(job)


def test_a_job_whose_run_stopped_stalled_is_stalled_not_finished(tmp_path):
    """A GRPO run that `grpo.stop_when_stalled` ends exits 0; the app says what its run.json says."""
    run = _training_run(tmp_path)
    jobs.start(tmp_path, _python(run, "runs.stall(Path(" + repr(str(run)) + "), 'clipped')"), tmp_path)
    _until(lambda: jobs.load(tmp_path)[0].state not in ("running", "stopping"), seconds=120)  # a loaded machine
    (job,) = jobs.load(tmp_path)
    assert (job.returncode, job.state, runs.read(run)["status"]) == (0, "stalled", "stalled")


def test_ctrl_c_stops_fastmath_even_when_its_parent_ignored_sigint(tmp_path):
    """A shell script's background job, or a pytest-xdist worker, starts children with SIGINT ignored;
    Stop (Ctrl-C) must still end a `python -m fastmath` command as Ctrl-C does: 'interrupted', exit 130."""
    program = tmp_path / "loop.py"
    program.write_text("while True:\n    pass\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastmath", "sandbox", str(program), "--timeout", "60"],
        env=env, stderr=subprocess.PIPE, text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )  # fmt: skip
    try:
        time.sleep(3)  # the program runs in its sandbox
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "interrupted" in stderr, stderr[-2000:]


def test_a_command_that_fails_before_it_makes_its_run_leaves_no_folder_and_keeps_its_log(tmp_path):
    """A model that is not there: `python -m fastmath sft` ends before training begins; the app keeps
    no run folder that no page lists, shows the log from the job's own folder, and offers no Resume."""
    missing = tmp_path / "models" / "not-built"
    plan = jobs.plan(tmp_path, "sft", "tiny-sft", {"model.name": str(missing)}, stamp=STAMP)
    job = jobs.start(tmp_path, plan, tmp_path)
    assert plan.run.is_dir()  # its log is there while it runs
    _until(lambda: jobs.load(tmp_path)[0].state not in ("running", "stopping"), seconds=120)
    (job,) = jobs.load(tmp_path)
    assert job.state == "failed" and job.returncode == 2
    assert not plan.run.exists() and not jobs.started_its_run(job) and not jobs.resumable(tmp_path, job)
    log = (jobs.log_folder(tmp_path, job) / runs.LOG).read_text()
    assert log.startswith(f"\n$ {plan.shell}\n") and str(missing) in log and "Traceback" not in log
    assert tables.log_tail(jobs.log_folder(tmp_path, job)) and tables.run_names(tmp_path) == []
