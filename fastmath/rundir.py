"""Run directories: `outputs/<run>/` with the recipe, metrics, summary and the adapter.

Layout (read by eval, DPO and the app):
  run.json        stage, base model, parent run, start time, status (running|finished)
  recipe.yaml     the fully resolved recipe
  metrics.jsonl   one line per logging step
  summary.json    final figures, written once at the end
  adapter_*       the PEFT adapter (+ tokenizer files); checkpoint-N/ while training
  eval/<dataset>/<strategy>.jsonl, <strategy>.settings.json and summary.json (fastmath.evaluate)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import re
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from fastmath.config import Recipe, save_recipe
from fastmath.errors import FastmathError
from fastmath.io import atomic_write_json

LIBRARIES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes", "unsloth")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def read_run(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "run.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def list_runs(output_dir: str | Path, stage: str | None = None) -> list[Path]:
    """Run directories under `output_dir`, oldest first, optionally of one stage."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    runs = [p for p in root.iterdir() if (p / "run.json").is_file()]
    runs = [p for p in runs if stage is None or read_run(p).get("stage") == stage]
    return sorted(runs, key=lambda p: (read_run(p).get("started", ""), p.name))


def latest_run(output_dir: str | Path, stage: str, finished: bool = True) -> Path:
    runs = [p for p in list_runs(output_dir, stage) if not finished or read_run(p).get("status") == "finished"]
    if not runs:
        raise FastmathError(f"no finished {stage} run in {output_dir}/; run `make {stage}` first or name a run")
    return runs[-1]


def adapter_run(name: str, output_dir: str | Path) -> Path:
    """A run that holds an adapter, named by its path or by its run name under `output_dir`."""
    run = Path(name)
    if not run.is_dir() and (Path(output_dir) / name).is_dir():
        run = Path(output_dir) / name
    if not (run / "adapter_config.json").is_file():
        raise FastmathError(f"--lora {name}: no adapter (adapter_config.json) there; name a finished SFT or DPO run")
    return run


def _default_name(stage: str, model_name: str) -> str:
    model = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(model_name.rstrip("/")).name).strip("-").lower()
    return f"{stage}-{model}-{time.strftime('%Y%m%d-%H%M%S')}"


def create(recipe: Recipe, stage: str, parent: str | None = None) -> Path:
    """A fresh run directory, with run.json and recipe.yaml written (by the main process only).

    Under `accelerate launch` every process must agree on the directory, so the main process
    picks the timestamped name and broadcasts it.
    """
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    state = PartialState()
    name = [recipe.training.run_name or _default_name(stage, recipe.model.name)]
    if state.num_processes > 1:
        broadcast_object_list(name)
    recipe.training.run_name = name[0]
    run_dir = Path(recipe.training.output_dir) / name[0]
    if state.is_main_process:
        if (run_dir / "run.json").exists():
            raise FastmathError(
                f"run directory {run_dir} already exists; pick another training.run_name, "
                f"or continue it with --resume {run_dir}"
            )
        run_dir.mkdir(parents=True, exist_ok=True)
        save_recipe(recipe, run_dir / "recipe.yaml")
        atomic_write_json(
            run_dir / "run.json",
            {
                "stage": stage,
                "base_model": recipe.model.name,
                "parent": parent,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "status": "running",
            },
        )
    state.wait_for_everyone()
    return run_dir


def finish(run_dir: Path, summary: dict[str, Any]) -> None:
    atomic_write_json(run_dir / "summary.json", summary)
    meta = read_run(run_dir)
    meta.update(status="finished", finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
    atomic_write_json(run_dir / "run.json", meta)


def last_checkpoint(run_dir: Path) -> Path | None:
    checkpoints = [p for p in run_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return max(checkpoints, key=lambda p: int(p.name.split("-")[-1]), default=None)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastmath latest-run", description="print the newest run dir")
    parser.add_argument("stage", choices=["sft", "dpo"])
    parser.add_argument("--output-dir", default="outputs")
    args = parser.parse_args(argv)
    print(latest_run(args.output_dir, args.stage))
    return 0
