"""Ctrl-C (the app's Stop) ends every training stage at the end of its current step with a
checkpoint of that step: a real `python -m fastmath <stage>` process on the tiny model, sent SIGINT.

Each run is given a million steps and a save interval it never reaches, so the only checkpoint
there can be is the one Ctrl-C saves, and the process cannot finish before the test stops it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastmath import runs

from ..conftest import REPO

pytestmark = pytest.mark.slow
MILLION = 1_000_000
ENV = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def _steps(run: Path) -> list[int]:
    path = run / runs.METRICS
    return [json.loads(line)["step"] for line in path.read_text().splitlines()] if path.exists() else []


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fastmath", *args], cwd=cwd, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip


def ctrl_c_after(process: subprocess.Popen, run: Path, step: int, seconds: float = 600) -> str:
    """SIGINT once the run has logged `step`; the process's output once it has ended."""
    deadline = time.monotonic() + seconds
    try:
        while max(_steps(run), default=0) < step:
            assert process.poll() is None, process.stdout.read()[-3000:]
            assert time.monotonic() < deadline, f"no step {step} logged in {seconds} s"
            time.sleep(0.2)
    except AssertionError:
        process.kill()  # no million-step run left training after a failed test
        raise
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=300)
    return out


def assert_stopped_with_a_checkpoint(process: subprocess.Popen, run: Path, out: str) -> int:
    """Exit 130, run.json `stopped`, and a complete checkpoint of the last step logged; that step."""
    assert process.returncode == 130, out[-3000:]
    assert runs.read(run)["status"] == "stopped"
    last = _steps(run)[-1]
    checkpoint = runs.last_checkpoint(run)
    assert checkpoint is not None and checkpoint.name == f"checkpoint-{last}", out[-3000:]
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == last
    assert f"stopped at step {last}: checkpoint-{last} saved" in out
    return last


def test_sft_ctrl_c_saves_the_step_and_resume_continues_from_it(tiny_model, tmp_path):
    run = tmp_path / "sft"
    args = ["sft", "tiny-sft", f"model.name={tiny_model}", f"training.max_steps={MILLION}", "training.logging_steps=1",
            f"training.save_steps={MILLION}", f"training.output_dir={tmp_path}", "training.run_name=sft"]  # fmt: skip
    process = start(args, tmp_path)
    stopped = assert_stopped_with_a_checkpoint(process, run, ctrl_c_after(process, run, 2))

    resumed = start(["sft", "--resume", str(run)], tmp_path)
    out = ctrl_c_after(resumed, run, stopped + 1)
    assert f"from checkpoint-{stopped}" in out
    again = assert_stopped_with_a_checkpoint(resumed, run, out)
    steps = _steps(run)
    assert again > stopped and steps == list(range(1, again + 1)), "the resumed run continues at the stopped step"


def test_dpo_ctrl_c_saves_the_step(tiny_model, tmp_path):
    parent = ["sft", "tiny-sft", f"model.name={tiny_model}", "training.max_steps=1",
              f"training.output_dir={tmp_path}", "training.run_name=sft"]  # fmt: skip
    sft = start(parent, tmp_path)
    out, _ = sft.communicate(timeout=600)
    assert sft.returncode == 0, out[-3000:]
    run = tmp_path / "dpo"
    args = ["dpo", "tiny-dpo", f"dpo.sft_run={tmp_path / 'sft'}", "dpo.pairs=fastmath:samples/preference_data.json",
            f"dpo.max_steps={MILLION}", f"training.save_steps={MILLION}", f"training.output_dir={tmp_path}",
            "training.run_name=dpo"]  # fmt: skip
    process = start(args, tmp_path)
    assert_stopped_with_a_checkpoint(process, run, ctrl_c_after(process, run, 2))


def test_grpo_ctrl_c_saves_the_step(tiny_model, tmp_path):
    run = tmp_path / "grpo"
    args = ["grpo", "tiny-grpo", "grpo.fresh_lora=true", f"model.name={tiny_model}", "grpo.problems=4",
            "grpo.num_generations=2", "grpo.batch_size=4", "grpo.max_completion_length=16", f"grpo.max_steps={MILLION}",
            f"training.save_steps={MILLION}", f"training.output_dir={tmp_path}", "training.run_name=grpo"]  # fmt: skip
    process = start(args, tmp_path)
    assert_stopped_with_a_checkpoint(process, run, ctrl_c_after(process, run, 2))
