"""GRPO health: runs that cannot learn are flagged, per step and in the summary, and can stop early.

Real GRPO runs of the tiny untrained model with a fresh LoRA: it never ends a completion on its own
and never answers a problem, so with a 4-token limit every completion is clipped, and every group of
samples scores 0 (no spread). Each test turns the other fraction's limit off (1.0: never exceeded),
so the run is flagged for the one thing under test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ..conftest import fastmath_cli

pytestmark = pytest.mark.slow
STEPS, STALLED_AFTER = 12, 3


def grpo(tiny_model, out: Path, name: str, *overrides: str):
    p = fastmath_cli("grpo", "tiny-grpo", "grpo.fresh_lora=true", f"model.name={tiny_model}", "grpo.problems=4",
                     "grpo.batch_size=4", "grpo.num_generations=2", f"grpo.max_steps={STEPS}",
                     f"grpo.stalled_steps={STALLED_AFTER}", f"training.output_dir={out}", f"training.run_name={name}",
                     *overrides, env={"OMP_NUM_THREADS": "1"}, timeout=900)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    run = out / name
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return p, run, rows, json.loads((run / "summary.json").read_text()), json.loads((run / "run.json").read_text())


def test_completions_cut_at_a_tiny_length_limit_stall_the_run(tiny_model, tmp_path):
    p, run, rows, summary, meta = grpo(
        tiny_model, tmp_path, "clipped", "grpo.max_completion_length=4", "grpo.max_zero_spread_fraction=1.0",
        "grpo.stop_when_stalled=true",
    )  # fmt: skip
    assert [r["completions/clipped_ratio"] for r in rows] == [1.0] * STALLED_AFTER, "per step, then stopped early"
    assert summary["steps"] == STALLED_AFTER < STEPS
    assert meta["status"] == "stalled" and "grpo.max_completion_length=4" in meta["error"]
    assert "raise grpo.max_completion_length" in p.stderr and "ending the run (status stalled)" in p.stderr
    health = summary["health"]
    assert health["clipped_fraction"] == 1.0 and "cut at grpo.max_completion_length" in health["stalled"]
    assert "groups" not in health["stalled"], "the zero-spread limit was off"
    assert "**Status**: stalled" in (run / "README.md").read_text(), "the card says so"


def test_problems_never_solved_are_flagged_for_zero_reward_spread(tiny_model, tmp_path):
    p, run, rows, summary, meta = grpo(
        tiny_model, tmp_path, "flat", "grpo.max_completion_length=8", "grpo.max_clipped_fraction=1.0"
    )
    assert [r["frac_reward_zero_std"] for r in rows] == [1.0] * STEPS and all(r["reward"] == 0 for r in rows)
    assert meta["status"] == "finished" and summary["steps"] == STEPS, "warned, not stopped (stop_when_stalled off)"
    health = summary["health"]
    assert health["zero_spread_fraction"] == 1.0 and "score the same" in health["stalled"]
    assert "cut at" not in health["stalled"], "the clipping limit was off"
    warning = next(line for line in p.stderr.splitlines() if "GRPO is learning nothing" in line)
    assert f"step {STALLED_AFTER}:" in warning and "raise grpo.temperature or grpo.num_generations" in warning
