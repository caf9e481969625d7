"""The stage registry drives the command line: each stage's command, the run it continues (named by
its key, else the newest finished run of its parent stage) and what it takes from that run."""

from __future__ import annotations

from fastmath import cli, config, runs, stages
from fastmath.io import atomic_write_json


def _finished_sft(root, name: str, started: str):
    run = root / name
    recipe = config.load_recipe(None, {"model.name": "org/base-model", "lora.r": 8, "data.system_prompt": "Be exact."})
    run.mkdir(parents=True)
    config.save_recipe(recipe, run / runs.RECIPE, "sft")
    atomic_write_json(run / runs.RUN_JSON, {"stage": "sft", "status": "finished", "started": started})
    atomic_write_json(run / runs.ADAPTER, {"base_model_name_or_path": "org/base-model"})
    return run


def test_each_stage_continues_its_parent_run_as_its_record_says(tmp_path):
    older = _finished_sft(tmp_path, "sft-old", "2026-01-01T00:00:00")
    newer = _finished_sft(tmp_path, "sft-new", "2026-01-02T00:00:00")
    assert list(cli.COMMANDS)[:4] == list(stages.registry()) == ["sft", "pairs", "dpo", "grpo"]
    out = f"training.output_dir={tmp_path}"
    for name in ("pairs", "dpo", "grpo"):
        stage = stages.get(name)
        inv = cli.prepare(cli.COMMANDS[name], [out])
        assert inv.parent == newer, f"{name}: the newest finished {stage.parent} run"
        assert (inv.recipe.model.name, inv.recipe.lora.r, inv.recipe.data.system_prompt) == (
            "org/base-model", 8, "Be exact."), name  # fmt: skip
        inv = cli.prepare(cli.COMMANDS[name], [out, f"{stage.parent_key}={older}"])
        assert inv.parent == older, f"{name}: the run its key names"
    assert cli.prepare(cli.COMMANDS["grpo"], [out, "grpo.fresh_lora=true"]).parent is None
    assert cli.COMMANDS["dpo"].resumable and not cli.COMMANDS["pairs"].resumable
    assert (
        config.stage_sections("pairs") == ("model", "data", "dpo", "eval") and config.schedule_section("dpo") == "dpo"
    )
