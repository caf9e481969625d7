"""Evaluate a model (+ LoRA adapter) on GSM8K or MGSM under prompt strategies, resumably.

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

Datasets: `gsm8k` (hub openai/gsm8k test; $FASTMATH_GSM8K_TEST or `--data-dir DIR` with
DIR/gsm8k/test.jsonl for a local copy), `mgsm_zh` / `mgsm_en` (hub juletxara/mgsm, or
DIR/mgsm/mgsm_zh.tsv), or a .jsonl/.json/.tsv FILE (named by its stem). Few-shot exemplars come
from the train split: $FASTMATH_GSM8K_TRAIN, DIR/gsm8k/train.jsonl, else the recipe's data.train.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from fastmath import card, hub, resources, runs
from fastmath.config import EvalConfig, Recipe
from fastmath.data import Problem, load_problems
from fastmath.errors import FastmathError
from fastmath.eval.prompting import Setup, Solution, select_shots, shot_pool
from fastmath.eval.strategies import STRATEGIES
from fastmath.eval.tot import tot_budget
from fastmath.grading import numbers_equal
from fastmath.io import JsonlAppender, atomic_write_json, atomic_write_text, exclusive, read_jsonl
from fastmath.log import log

MGSM_REPO = "juletxara/mgsm"
NAMED_DATASETS = ("gsm8k", "mgsm_zh", "mgsm_en")
# Settings that change a strategy's results beyond those every summary records.
STRATEGY_SETTINGS = {
    "few_shot": ("num_shots",),
    "self_consistency": ("sc_samples", "temperature"),
    "tot": ("tot_breadth", "tot_depth", "tot_proposals", "temperature"),
    "pot": ("unsafe_no_os_sandbox",),
}


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a proportion: sane at 0% and 100% and for small n, unlike p ± 2σ."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, center - half), min(1.0, center + half)


def outcome(pred: str | None, gold: str) -> str:
    """correct | wrong | none (no answer given), as `grading.grade` decides it."""
    if pred is None:
        return "none"
    return "correct" if numbers_equal(pred, gold) else "wrong"


# --- datasets -----------------------------------------------------------------------------------


def _local(data_dir: Path | None, relative: str) -> str | None:
    path = data_dir / relative if data_dir else None
    return str(path) if path and path.is_file() else None


def _mgsm_file(name: str, data_dir: Path | None) -> str:
    """MGSM's `mgsm_<lang>.tsv`: from --data-dir, else downloaded from the hub (it has no parquet build)."""
    local = _local(data_dir, f"mgsm/{name}.tsv") or _local(data_dir, f"{name}.tsv")
    if local:
        return local
    from huggingface_hub import hf_hub_download

    return hf_hub_download(hub.resolve(MGSM_REPO, "dataset"), f"{name}.tsv", repo_type="dataset")


def load_dataset(name: str, data_dir: Path | None = None) -> tuple[str, list[Problem]]:
    """(dataset name, all its problems) for gsm8k, mgsm_zh, mgsm_en or a data file."""
    if name == "gsm8k":
        source = os.environ.get("FASTMATH_GSM8K_TEST") or _local(data_dir, "gsm8k/test.jsonl") or "openai/gsm8k"
        problems = load_problems(source, split="test", subset="main")
    elif name in ("mgsm_zh", "mgsm_en"):
        problems = load_problems(_mgsm_file(name, data_dir), language=name[-2:])
    elif Path(resources.resolve(name)).is_file():
        problems = load_problems(name)
        name = Path(resources.resolve(name)).stem
    else:
        raise FastmathError(f"unknown dataset {name!r}: use {', '.join(NAMED_DATASETS)} or a .jsonl/.json/.tsv file")
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        raise FastmathError(f"dataset {name!r} repeats problem ids; results are kept per id, so ids must be unique")
    return name, problems


def train_source(recipe: Recipe, data_dir: Path | None) -> str:
    """Where few-shot exemplars come from: always a train split, never the evaluated test set."""
    return os.environ.get("FASTMATH_GSM8K_TRAIN") or _local(data_dir, "gsm8k/train.jsonl") or recipe.data.train


def few_shot_exemplars(dataset: list[Problem], cfg: EvalConfig, train: str | None) -> dict[str, list[Problem]]:
    """The fixed exemplars per language; none whose question is in the evaluated dataset (all of it)."""
    evaluated = frozenset(p.question.strip() for p in dataset)
    return {
        lang: select_shots(shot_pool(lang, train), cfg.num_shots, cfg.seed, evaluated)
        for lang in sorted({p.lang for p in dataset})
    }


# --- one evaluation -----------------------------------------------------------------------------


def _record(problem: Problem, solution: Solution) -> dict[str, Any]:
    return {
        "id": problem.id,
        "question": problem.question,
        "gold": problem.gold,
        "completion": solution.completion,
        "pred": solution.pred,
        "outcome": outcome(solution.pred, problem.gold),
        "tokens": solution.tokens,
        "finish_reason": solution.finish_reason,
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
    settings |= {key: getattr(cfg, key) for key in STRATEGY_SETTINGS.get(strategy, ())}
    if strategy == "few_shot":
        settings["exemplars"] = {lang: [p.id for p in shots] for lang, shots in setup.shots.items()}
    if strategy == "tot":
        settings["call_budget"] = tot_budget(cfg)
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


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy with its Wilson interval, no-answer and truncation rates, tokens."""
    n = len(rows)
    counts = {k: sum(r["outcome"] == k for r in rows) for k in ("correct", "wrong", "none")}
    lo, hi = wilson_interval(counts["correct"], n)
    return {
        "n": n,
        **counts,
        "accuracy": round(counts["correct"] / n, 4),
        "ci95": [round(lo, 4), round(hi, 4)],
        "no_answer_rate": round(counts["none"] / n, 4),
        "truncation_rate": round(sum(r["finish_reason"] == "length" for r in rows) / n, 4),
        "tokens": sum(r["tokens"] for r in rows),
    }


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
        for i, solution in STRATEGIES[strategy].solve(setup, [(p.question, p.lang) for p in todo]):
            out.write(_record(todo[i], solution))
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


def run_eval(
    recipe: Recipe, adapter: Path | None, backend: str, data_dir: Path | None, fresh: bool, table: bool
) -> Path:
    """Load the datasets (failing fast), then the model once, then every dataset x strategy; return the run."""
    cfg = recipe.eval
    datasets = [load_dataset(name, data_dir) for name in cfg.datasets]
    root = Path(recipe.training.output_dir)
    run_dir = adapter or runs.base_run(root, recipe.model.name)

    from fastmath.models import load_for_inference

    log.info(f"model: {recipe.model.name}" + (f" + adapter {adapter}" if adapter else " (no adapter)"))
    model, tokenizer = load_for_inference(recipe.model, str(adapter) if adapter else None, backend)
    meta = {"model": recipe.model.name, "adapter": str(adapter.resolve()) if adapter else None, "backend": backend}
    train = train_source(recipe, data_dir)
    for name, dataset in datasets:
        shots = few_shot_exemplars(dataset, cfg, train) if "few_shot" in cfg.strategies else {}
        setup = Setup(model, tokenizer, cfg, shots, recipe.data.system_prompt)
        problems, out_dir = dataset[: cfg.samples], runs.eval_dir(run_dir, name)
        summaries = {s: evaluate(setup, problems, s, out_dir, meta=meta, fresh=fresh) for s in cfg.strategies}
        card.after_evaluation(run_dir, name, summaries)
        text = comparison_table(summaries)
        log.info(f"\n{name}: {len(problems)} problems\n{text}results: {out_dir}")
        if table:
            title = f"# {name}: {meta['model']}" + (f" + {meta['adapter']}" if meta["adapter"] else "")
            atomic_write_text(out_dir / "comparison.md", f"{title}\n\n{text}")
    return run_dir


def main(inv) -> int:
    """`python -m fastmath eval` and `python -m fastmath prompts` (which also writes comparison.md)."""
    run_eval(inv.recipe, inv.parent, inv.backend, inv.args.data_dir, inv.args.fresh, inv.args.command == "prompts")
    return 0
