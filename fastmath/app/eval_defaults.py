"""What an evaluation of a run started from the app defaults to: the data and strategies its
relatives were last evaluated on, so that its result lands in the same leaderboard rows
(dataset · strategy) as theirs, on the same number of problems, read from local files.

A run's relatives, nearest first: its parent and their parents, the runs sharing its parent, the
base model's own evaluations, any run of the same base model. A run none of them was evaluated
beside is evaluated on the data it trained on, with the prompt SFT trains on (zero_shot).

A leaderboard row names a dataset (a task, or a data file's stem); the command needs its source:
the task's name, or the file it came from, found among the data the relatives trained on, the
app's earlier eval commands and fastmath's shipped samples.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from fastmath import resources, runs, tasks
from fastmath.app import tables
from fastmath.errors import FastmathError

TRAINED_PROMPT = "zero_shot"  # the prompt SFT trains on: a run evaluated beside none is asked this way


def relatives(outputs: Path, name: str) -> list[Path]:
    """The run's relatives, nearest first (never the run itself)."""
    run = outputs / name
    meta = runs.read(run)
    found: list[Path] = []
    parent = meta.get("parent")  # a name in the same outputs folder
    while isinstance(parent, str) and parent and len(found) < 10:
        found.append(outputs / parent)
        parent = runs.read(outputs / parent).get("parent")
    every = {p: runs.read(p) for p in reversed(runs.list_runs(outputs)) if p.resolve() != run.resolve()}
    found += [p for p, m in every.items() if meta.get("parent") and m.get("parent") == meta.get("parent")]
    model = meta.get("base_model")
    found += [p for p, m in every.items() if m.get("stage") == "base" and m.get("base_model") == model]
    found += [p for p, m in every.items() if m.get("base_model") == model]
    return list(dict.fromkeys(p for p in found if p.is_dir()))


def _latest_eval(run: Path) -> tuple[str, dict[str, dict[str, Any]]] | None:
    """(dataset, {strategy: summary}) of the run's most recent evaluation, or None."""
    dated = []
    for dataset in tables.datasets(run):
        with contextlib.suppress(FastmathError, OSError, ValueError):
            summary = tables.eval_summary(run, dataset)
            if summary:
                dated.append(((runs.eval_dir(run, dataset) / runs.SUMMARY).stat().st_mtime, dataset, summary))
    return max(dated)[1:] if dated else None


def _trained_on(run: Path) -> str | None:
    recipe = run / runs.RECIPE
    with contextlib.suppress(FastmathError, OSError, ValueError):
        return runs.saved_recipe(run).data.train if recipe.is_file() else None
    return None


def _stem(source: str) -> str | None:
    with contextlib.suppress(FastmathError, OSError):
        return Path(resources.resolve(source)).stem
    return None


def _app_eval_sources(outputs: Path) -> list[str]:
    """The datasets the app's earlier eval commands named (`eval.datasets=a,b`)."""
    found = []
    for path in sorted((outputs / ".jobs").glob("*.json"), reverse=True) if (outputs / ".jobs").is_dir() else ():
        with contextlib.suppress(OSError, ValueError, TypeError):
            for word in json.loads(path.read_text(encoding="utf-8")).get("argv", []):
                if word.startswith("eval.datasets="):
                    found += [v.strip(" []'\"") for v in word.partition("=")[2].split(",")]
    return found


def source(outputs: Path, dataset: str, family: list[Path]) -> str | None:
    """The `eval.datasets` entry that evaluates into `dataset`'s rows, or None when none is known."""
    if dataset in tasks.names():
        return dataset
    candidates = [_trained_on(run) for run in family] + _app_eval_sources(outputs)
    samples = sorted((resources.package_dir() / "samples").glob("*"))
    candidates += [f"{resources.SCHEME}samples/{p.name}" for p in samples]
    return next((c for c in candidates if c and _stem(c) == dataset), None)


def for_run(outputs: Path, name: str) -> dict[str, Any]:
    """`{key: value}` for an eval of run `name`: datasets, strategies, samples and answer length."""
    family = [outputs / name, *relatives(outputs, name)]
    for relative in family[1:]:
        latest = _latest_eval(relative)
        found = source(outputs, latest[0], family) if latest else None
        if latest and found:
            summaries = latest[1]
            first = next(iter(summaries.values()))
            keys: dict[str, Any] = {"eval.datasets": [found], "eval.strategies": list(summaries)}
            if isinstance(first.get("samples"), int):
                keys["eval.samples"] = first["samples"]
            if isinstance(first.get("max_new_tokens"), int):
                keys["eval.max_new_tokens"] = first["max_new_tokens"]
            return keys
    trained = next((t for t in map(_trained_on, family) if t), None)
    return {"eval.datasets": [trained], "eval.strategies": [TRAINED_PROMPT]} if trained else {}


def model_keys(outputs: Path, name: str) -> dict[str, Any]:
    """`{model.key: value}`: the base model and load settings the run's adapter goes with, which an
    eval of it loads whatever the recipe says (`runs.model_settings`); what the form shows for them."""
    settings = runs.model_settings(outputs / name)
    return {f"model.{k}": v for k, v in vars(settings).items()}
