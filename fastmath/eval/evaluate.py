"""Evaluate a model (+ LoRA adapter) on benchmark tasks or data files under prompt strategies, resumably.

    python -m fastmath eval                                     # newest SFT run, GSM8K test, CoT
    python -m fastmath eval --lora outputs/<run> --dataset mgsm_zh --strategies cot,pot --samples 200
    python -m fastmath eval --model Qwen/Qwen2.5-7B-Instruct    # a base model, no adapter
    python -m fastmath prompts --samples 200                    # every strategy, one comparison table

Results go to `<run>/eval/<dataset>/`: `<strategy>.jsonl`, one line per problem (id, question, gold,
completion, pred, outcome, tokens, finish_reason, + the strategy's own fields), written as each
batch finishes, so rerunning an interrupted command skips what is done (`--fresh` redoes it); and
`summary.json`, `{strategy: figures}`, rewritten atomically after each strategy. `<run>` is the
adapter's run directory, or `outputs/base-<model>/` for a base model. One process at a time
writes a results file: a second eval of the same run, dataset and strategy is refused while the
first runs (a lock the kernel drops when its holder dies), so no row is written twice or lost.

Datasets: a shipped task (`fastmath.tasks`: gsm8k, mgsm_en, mgsm_zh, svamp, asdiv, gsm_hard,
cmath, cmath_distractor; local copies under `--data-dir DIR` or $FASTMATH_DATA_DIR, else the hub
where the task has a hub copy), a user's task file (`my_task.yaml`), or a data file (.jsonl, .json,
.csv, .parquet, .tsv; named by its stem) whose fields `data.question_field`/`data.answer_field`
name. Few-shot exemplars come from the task's `shots`, never a test set. A task with a `group`
(CMATH's grade) adds per-group figures to its summary.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastmath import card, resources, runs, tasks
from fastmath.config import EvalConfig, Recipe
from fastmath.data import Fields, Problem
from fastmath.errors import FastmathError
from fastmath.eval import strategies
from fastmath.eval.prompting import Setup, Solution, select_shots, shot_pool
from fastmath.grading import outcome
from fastmath.io import JsonlAppender, atomic_write_json, atomic_write_text, exclusive, read_jsonl
from fastmath.log import log


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a proportion: sane at 0% and 100% and for small n, unlike p ± 2σ."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, center - half), min(1.0, center + half)


# --- datasets -----------------------------------------------------------------------------------


def load_dataset(
    name: str, data_dir: Path | None = None, fields: Fields = Fields()
) -> tuple[tasks.Task, list[Problem]]:
    """(the task, its test problems) for a shipped task, a user's task file, or a data file read with `fields`."""
    if name in tasks.names() or Path(name).suffix in tasks.TASK_SUFFIXES:
        task = tasks.get(name)
    elif Path(resources.resolve(name)).expanduser().is_file():
        task = tasks.from_file(name, fields)
    else:
        raise FastmathError(
            f"unknown dataset {name!r}: use a task ({', '.join(tasks.names())}), a task .yaml file, "
            "or a .jsonl/.json/.csv/.parquet/.tsv file"
        )
    problems = task.problems("test", tasks.data_dir(data_dir))
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        raise FastmathError(f"dataset {name!r} repeats problem ids; results are kept per id, so ids must be unique")
    return task, problems


def first(problems: list[Problem], n: int | None) -> list[Problem]:
    """The first `n` problems (`eval.samples`); of a task with groups, taken in turn from each group
    in file order, so that a sample of CMATH has every grade rather than 100 of grade 1."""
    if n is None or all(p.group is None for p in problems):
        return problems[:n]
    groups: dict[str | None, list[Problem]] = {}
    for p in problems:
        groups.setdefault(p.group, []).append(p)
    rounds = itertools.zip_longest(*groups.values())
    return [p for p in itertools.chain.from_iterable(rounds) if p is not None][:n]


def few_shot_exemplars(dataset: list[Problem], cfg: EvalConfig, train: str | None) -> dict[str, list[Problem]]:
    """The fixed exemplars per language; none whose question is in the evaluated dataset (all of it)."""
    evaluated = frozenset(p.question.strip() for p in dataset)
    return {
        lang: select_shots(shot_pool(lang, train), cfg.num_shots, cfg.seed, evaluated)
        for lang in sorted({p.lang for p in dataset})
    }


# --- one evaluation -----------------------------------------------------------------------------


def _record(problem: Problem, solution: Solution, tolerance: float) -> dict[str, Any]:
    group = {} if problem.group is None else {"group": problem.group}
    return {
        "id": problem.id,
        "question": problem.question,
        "gold": problem.gold,
        "completion": solution.completion,
        "pred": solution.pred,
        "outcome": outcome(solution.pred, problem.gold, tolerance),
        "tokens": solution.tokens,
        "finish_reason": solution.finish_reason,
        **group,
        **solution.extra,
    }


def read_summaries(out_dir: Path) -> dict[str, dict[str, Any]]:
    """`out_dir/summary.json`: {strategy: figures}, empty before the first strategy finished."""
    path = out_dir / runs.SUMMARY
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def settings_of(setup: Setup, strategy: str, meta: dict[str, Any]) -> dict[str, Any]:
    """Everything that fixes a strategy's answers (batch size does not): they are recorded with the
    results, and resuming under other settings is refused rather than mixing two evaluations."""
    cfg = setup.cfg
    settings = {**meta, "seed": cfg.seed, "max_new_tokens": cfg.max_new_tokens}
    settings |= strategies.get(strategy).settings(setup)  # the strategy's own (its record says which)
    if setup.system:
        settings["system_prompt"] = setup.system
    return settings


def _answered(path: Path, settings: dict[str, Any], problems: list[Problem], fresh: bool) -> set[str]:
    """Ids `path` already answers under these settings (none with `fresh`); recorded beside it as
    `<strategy>.settings.json`. Results made otherwise, or for other questions, are an error."""
    record = path.with_suffix(".settings.json")
    if fresh:
        path.unlink(missing_ok=True)
    if path.exists() and record.is_file():
        earlier = json.loads(record.read_text(encoding="utf-8"))
        changed = sorted(k for k in settings.keys() | earlier.keys() if settings.get(k) != earlier.get(k))
        if changed:
            was = ", ".join(f"{k}={earlier.get(k)!r}" for k in changed)
            raise FastmathError(f"{path} was made with {was}: rerun with those settings to resume, or add --fresh")
    atomic_write_json(record, settings)
    questions = {row["id"]: row["question"] for row in read_jsonl(path)} if path.exists() else {}
    moved = [p.id for p in problems if questions.get(p.id, p.question) != p.question]
    if moved:
        raise FastmathError(f"{path} holds other questions under ids {', '.join(moved[:3])}: add --fresh to redo")
    return set(questions)


def _accuracy(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n, correct = len(rows), sum(r["outcome"] == "correct" for r in rows)
    lo, hi = wilson_interval(correct, n)
    accuracy = round(correct / n, 4) if n else 0.0
    return {"n": n, "correct": correct, "accuracy": accuracy, "ci95": [round(lo, 4), round(hi, 4)]}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy with its Wilson interval, no-answer and truncation rates, tokens; per group when rows have one."""
    n = len(rows)
    counts = {k: sum(r["outcome"] == k for r in rows) for k in ("correct", "wrong", "none")}
    summary = {
        **_accuracy(rows),
        **counts,
        "no_answer_rate": round(counts["none"] / n, 4),
        "truncation_rate": round(sum(r["finish_reason"] == "length" for r in rows) / n, 4),
        "tokens": sum(r["tokens"] for r in rows),
    }
    groups = sorted({r["group"] for r in rows if "group" in r}, key=lambda g: (len(g), g))  # 2 before 10
    if groups:
        summary["groups"] = {g: _accuracy([r for r in rows if r.get("group") == g]) for g in groups}
    return summary


def evaluate(
    setup: Setup,
    problems: list[Problem],
    strategy: str,
    out_dir: Path,
    *,
    meta: dict[str, Any] | None = None,
    fresh: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run `strategy` on the problems not yet in `out_dir/<strategy>.jsonl`; return its summary.

    Each answer is appended (fsynced) as its batch finishes; the summary covers every requested
    problem, those read back from an earlier run included. Timing covers this run's problems
    (`resumed` says how many were read back), or the earlier summary's when none were left.
    `meta` (model, adapter, backend) is recorded. Without `setup.shots`, few-shot draws its exemplars
    from the default pool (`prompting.shot_pool`), leaving out the problems evaluated.
    """
    if strategy == "few_shot" and not setup.shots:
        setup = dataclasses.replace(setup, shots=few_shot_exemplars(problems, setup.cfg, None))
    path = out_dir / f"{strategy}.jsonl"
    with exclusive(path, f"{path} (another eval of this run, dataset and strategy)"):
        return _evaluate_locked(setup, problems, strategy, path, meta or {}, fresh, progress)


def _evaluate_locked(
    setup: Setup, problems: list[Problem], strategy: str, path: Path, meta: dict[str, Any], fresh: bool, progress: bool
) -> dict[str, Any]:
    from tqdm.auto import tqdm

    out_dir = path.parent
    settings = settings_of(setup, strategy, meta)
    done = _answered(path, settings, problems, fresh)
    todo = [p for p in problems if p.id not in done]
    start = time.perf_counter()
    bar = tqdm(
        total=len(problems), initial=len(problems) - len(todo), unit="problem", desc=strategy, disable=not progress
    )
    with JsonlAppender(path) as out, bar:
        for i, solution in strategies.get(strategy).solve(setup, [(p.question, p.lang) for p in todo]):
            out.write(_record(todo[i], solution, meta.get("tolerance", 0.0)))
            bar.update()
    wall = time.perf_counter() - start

    wanted = {p.id for p in problems}
    rows = [row for row in read_jsonl(path) if row["id"] in wanted]
    with exclusive(out_dir / runs.SUMMARY, "the summary", wait=True):  # other strategies' evals update it too
        summaries = read_summaries(out_dir)
        earlier = summaries.get(strategy, {})
        timing = (
            {"wall_time_s": round(wall, 2), "problems_per_s": round(len(todo) / max(wall, 1e-9), 3)}
            if todo or not earlier
            else {k: earlier.get(k) for k in ("wall_time_s", "problems_per_s")}
        )
        summary = {
            **summarize(rows),
            "samples": setup.cfg.samples,
            **settings,
            **timing,
            "resumed": len(problems) - len(todo),
        }
        summaries[strategy] = summary
        atomic_write_json(out_dir / runs.SUMMARY, summaries)
    return summary


# --- command line -------------------------------------------------------------------------------


def comparison_table(summaries: dict[str, dict[str, Any]]) -> str:
    """A Markdown table, one row per strategy: readable in a terminal and on GitHub."""
    lines = [
        "| strategy | accuracy (95% CI) | no answer | truncated | problems/s |",
        "|---|---|---|---|---|",
    ]
    for name, s in summaries.items():
        lo, hi = s["ci95"]
        speed = f"{s['problems_per_s']:.2f}" if s.get("problems_per_s") is not None else "-"
        lines.append(
            f"| {name} | {100 * s['accuracy']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] (n={s['n']}) "
            f"| {100 * s['no_answer_rate']:.1f}% | {100 * s['truncation_rate']:.1f}% | {speed} |"
        )
    return "\n".join(lines) + "\n"


@dataclass
class Evaluated:
    """One dataset's evaluation: the task, the problems asked, where the results are, `{strategy: summary}`."""

    task: tasks.Task
    problems: list[Problem]
    out_dir: Path
    summaries: dict[str, dict[str, Any]]


def evaluate_tasks(
    recipe: Recipe, adapter: Path | None, backend: str, data_dir: Path | None, fresh: bool
) -> tuple[Path, dict[str, Any], list[Evaluated]]:
    """Load every dataset and its few-shot pool (failing fast), then the model once, then every
    dataset x strategy; return the run, what the summaries record about the model, and the results."""
    cfg, local = recipe.eval, tasks.data_dir(data_dir)
    fields = Fields.named(recipe.data.question_field, recipe.data.answer_field)
    datasets = [load_dataset(name, data_dir, fields) for name in cfg.datasets]
    pools = {task.name: task.shot_source(local) for task, _ in datasets} if "few_shot" in cfg.strategies else {}
    run_dir = adapter or runs.base_run(Path(recipe.training.output_dir), recipe.model.name)

    from fastmath.models import load_for_generation

    log.info(f"model: {recipe.model.name}" + (f" + adapter {adapter}" if adapter else " (no adapter)"))
    model, tokenizer = load_for_generation(recipe.model, cfg, str(adapter) if adapter else None, backend)
    meta = {"model": recipe.model.name, "adapter": str(adapter.resolve()) if adapter else None, "backend": backend}
    meta |= getattr(model, "settings", {})  # vLLM's: the engine, and a QLoRA adapter's 16-bit base (HF: none)
    results = []
    for task, dataset in datasets:
        shots = few_shot_exemplars(dataset, cfg, pools[task.name]) if pools else {}
        setup = Setup(model, tokenizer, cfg, shots, recipe.data.system_prompt)
        problems, out_dir = first(dataset, cfg.samples), runs.eval_dir(run_dir, task.name)
        task_meta = meta | ({"tolerance": task.tolerance} if task.tolerance else {})
        task_meta |= {"group_by": task.fields.group} if task.fields.group else {}
        summaries = {s: evaluate(setup, problems, s, out_dir, meta=task_meta, fresh=fresh) for s in cfg.strategies}
        card.after_evaluation(run_dir, task.name, summaries)
        results.append(Evaluated(task, problems, out_dir, summaries))
    return run_dir, meta, results


def run_eval(
    recipe: Recipe, adapter: Path | None, backend: str, data_dir: Path | None, fresh: bool, table: bool
) -> Path:
    """Every dataset x strategy, a comparison table per dataset; return the run."""
    run_dir, meta, results = evaluate_tasks(recipe, adapter, backend, data_dir, fresh)
    for r in results:
        text = comparison_table(r.summaries)
        log.info(f"\n{r.task.name}: {len(r.problems)} problems\n{text}results: {r.out_dir}")
        if table:
            title = f"# {r.task.name}: {meta['model']}" + (f" + {meta['adapter']}" if meta["adapter"] else "")
            atomic_write_text(r.out_dir / "comparison.md", f"{title}\n\n{text}")
    return run_dir


def main(inv) -> int:
    """`python -m fastmath eval` and `python -m fastmath prompts` (which also writes comparison.md)."""
    run_eval(inv.recipe, inv.parent, inv.backend, inv.args.data_dir, inv.args.fresh, inv.args.command == "prompts")
    return 0
