"""A stage and a strategy added from outside the package, as another distribution adds them: its
modules on the path and its entry points (`fastmath.stages`, `fastmath.strategies`), nothing in
fastmath edited. Each runs through the command line (the modules are in tests/plugins/)."""

from __future__ import annotations

import json
import shutil

import pytest

from fastmath import runs

from .conftest import REPO, fastmath_cli

PLUGINS = REPO / "tests" / "plugins"
SAMPLE = "fastmath:samples/sample_english_math.json"


@pytest.fixture
def plugin_env(tmp_path) -> dict[str, str]:
    """A folder holding the plugin modules and their distribution's metadata, first on PYTHONPATH."""
    site = tmp_path / "site"
    info = site / "fm_plugins-0.1.dist-info"
    info.mkdir(parents=True)
    for module in ("fm_cpt.py", "fm_plan.py"):
        shutil.copy(PLUGINS / module, site / module)
    shutil.copy(PLUGINS / "entry_points.txt", info / "entry_points.txt")
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fm-plugins\nVersion: 0.1\n")
    return {"PYTHONPATH": f"{site}:{REPO}"}


def test_plugins_are_listed_and_checked_before_anything_loads(plugin_env, tmp_path):
    p = fastmath_cli("--help", env=plugin_env)
    assert "  cpt " in p.stdout and "continued pretraining" in p.stdout
    p = fastmath_cli("cpt", "--help", env=plugin_env)
    assert "cpt.learning_rate  (float = 0.0001)" in p.stdout and "training.num_epochs" not in p.stdout
    p = fastmath_cli("eval", "eval.strategies=plan_frist", "--model", str(tmp_path), env=plugin_env)
    assert p.returncode == 2 and "takes zero_shot" in p.stderr and "plan_first" in p.stderr
    p = fastmath_cli("eval", "eval.strategies=plan_first", "--model", str(tmp_path))  # without the plugin
    assert p.returncode == 2 and "got 'plan_first'" in p.stderr


@pytest.mark.slow
def test_a_plugin_strategy_evaluates_and_solves(plugin_env, tiny_model, tmp_path):
    out = tmp_path / "outputs"
    common = ["--model", str(tiny_model), "--max-new-tokens", "8", "--output-dir", str(out)]
    p = fastmath_cli("eval", "--dataset", SAMPLE, "--strategies", "plan_first", "--samples", "2", *common,
                     "model.backend=hf", env=plugin_env)  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    results = runs.eval_dir(runs.base_run_dir(out, str(tiny_model)), "sample_english_math")
    rows = [json.loads(line) for line in (results / "plan_first.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["outcome"] in ("correct", "wrong", "none") for r in rows)
    settings = json.loads((results / "plan_first.settings.json").read_text())
    assert settings["plan"].startswith("Let's first understand the problem")  # the record's own settings
    p = fastmath_cli("solve", "Tom has 3 apples and buys 4 more. How many now?", "--strategy", "plan_first",
                     *common, env=plugin_env)  # fmt: skip
    assert p.returncode == 0 and "\nanswer: " in p.stdout, p.stderr[-2000:]


@pytest.mark.slow
def test_a_plugin_stage_trains_a_run_of_its_own(plugin_env, tiny_model, tmp_path):
    out = tmp_path / "outputs"
    p = fastmath_cli("cpt", "tiny-sft", f"model.name={tiny_model}", f"data.train={SAMPLE}", "data.limit=8",
                     "cpt.max_steps=2", "cpt.batch_size=4", "training.logging_steps=1", f"training.output_dir={out}",
                     env=plugin_env)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    latest = fastmath_cli("latest-run", "cpt", "--output-dir", str(out), env=plugin_env)
    run = out / latest.stdout.strip().rsplit("/", 1)[-1]
    meta, summary = runs.read(run), json.loads((run / runs.SUMMARY).read_text())
    assert (meta["stage"], meta["status"], meta["process"]["pid"] > 0) == ("cpt", "finished", True)
    assert summary["steps"] == 2 and summary["trained_tokens"] > 0  # counted as its record says (labels)
    recorded = (run / runs.RECIPE).read_text()
    assert "cpt:" in recorded and "max_steps: 2" in recorded and "dpo:" not in recorded
    assert (run / runs.ADAPTER).is_file() and len((run / runs.METRICS).read_text().splitlines()) >= 2
