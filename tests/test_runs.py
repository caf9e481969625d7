"""Run status owned by `runs`: run.json names the process writing the run, so any reader tells a
run whose process died without a word (kill -9, OOM) as crashed, whoever started it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from fastmath import runs
from fastmath.app import tables

from .conftest import REPO

TRAINER = """
import sys, time
from fastmath import config, runs
recipe = config.Recipe()
recipe.model.name, recipe.training.output_dir, recipe.training.run_name = "tiny", sys.argv[1], "sft-x"
runs.create(recipe, "sft")
print("ready", flush=True)
time.sleep(120)
"""


def test_a_run_killed_in_a_terminal_reads_crashed_not_running(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", TRAINER, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        run = tmp_path / "sft-x"
        process = runs.read(run)["process"]
        assert process["pid"] == child.pid and process["host"] and process["start"] is not None
        assert runs.status(run) == "running" and tables.read_run(tmp_path, "sft-x").status == "running"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert runs.read(run)["status"] == "running", "killed -9: it could not say so itself"
    assert runs.status(run) == "crashed" and tables.read_run(tmp_path, "sft-x").status == "crashed"
    assert runs.status(run, {**runs.read(run), "process": {**process, "host": "elsewhere"}}) == "running", (
        "another machine's process cannot be seen: its word is taken"
    )


def test_a_reused_pid_is_not_the_run_s_process(tmp_path):
    run = tmp_path / "sft-y"
    me = runs.this_process()
    runs.atomic_write_json(run / runs.RUN_JSON, {"stage": "sft", "status": "running", "process": me})
    assert runs.status(run) == "running"
    runs.atomic_write_json(run / runs.RUN_JSON, {"stage": "sft", "status": "running", "process": {**me, "start": 1}})
    assert runs.status(run) == "crashed", "the same pid, started at another time, is another process"
    runs.atomic_write_json(run / runs.RUN_JSON, {"stage": "sft", "status": "failed", "process": {**me, "start": 1}})
    assert runs.status(run) == "failed"
