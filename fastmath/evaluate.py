"""Evaluate a model (+ LoRA adapter) on GSM8K or MGSM under prompt strategies, resumably.

    python -m fastmath eval                                     # newest SFT run, GSM8K test, CoT
    python -m fastmath eval --lora outputs/<run> --dataset mgsm_zh --strategies cot,pot --samples 200
    python -m fastmath eval --model Qwen/Qwen2.5-7B-Instruct    # a base model, no adapter
    python -m fastmath prompts --samples 200                    # every strategy, one comparison table

Results go to `<run>/eval/<dataset>/`: `<strategy>.jsonl`, one line per problem (id, question, gold,
completion, pred, outcome, tokens, finish_reason, + the strategy's own fields), written as each
batch finishes, so rerunning an interrupted command skips what is done (`--fresh` redoes it); and
`summary.json`, `{strategy: figures}`, rewritten atomically after each strategy. `<run>` is the
adapter's run directory, or `outputs/base-<model>/` for a base model.

Datasets: `gsm8k` (hub openai/gsm8k test; $FASTMATH_GSM8K_TEST or `--data-dir DIR` with
DIR/gsm8k/test.jsonl for a local copy), `mgsm_zh` / `mgsm_en` (hub juletxara/mgsm, or
DIR/mgsm/mgsm_zh.tsv), or a .jsonl/.json/.tsv FILE (named by its stem). Few-shot exemplars come
from the train split: $FASTMATH_GSM8K_TRAIN, DIR/gsm8k/train.jsonl, else the recipe's data.train.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any

from fastmath import hub, rundir
from fastmath.config import EvalConfig, Recipe, load_recipe, parse_overrides
from fastmath.data import Problem, load_problems
from fastmath.errors import FastmathError
from fastmath.grading import numbers_equal
from fastmath.io import JsonlAppender, atomic_write_json, atomic_write_text, read_jsonl
from fastmath.prompts import detect_language
from fastmath.strategies import STRATEGIES, Setup, Solution, select_shots, shot_pool, tot_budget

MGSM_REPO = "juletxara/mgsm"
NAMED_DATASETS = ("gsm8k", "mgsm_zh", "mgsm_en")
# Settings that change a strategy's results beyond those every summary records.
STRATEGY_SETTINGS = {
    "few_shot": ("num_shots",),
    "self_consistency": ("sc_samples", "temperature"),
    "tot": ("tot_breadth", "tot_depth", "tot_proposals", "temperature"),
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
    elif Path(name).is_file():
        problems = load_problems(name)
        name = Path(name).stem
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
    path = out_dir / "summary.json"
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
    `meta` (model, adapter) is recorded. Without `setup.shots`, few-shot draws its exemplars from
    the default pool (`strategies.shot_pool`), leaving out the problems evaluated.
    """
    from tqdm.auto import tqdm

    if strategy == "few_shot" and not setup.shots:
        setup = dataclasses.replace(setup, shots=few_shot_exemplars(problems, setup.cfg, None))
    path = out_dir / f"{strategy}.jsonl"
    settings = settings_of(setup, strategy, meta or {})
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
    atomic_write_json(out_dir / "summary.json", summaries)
    return summary


def solve_one(model, tokenizer, question: str, strategy: str, cfg: EvalConfig) -> dict[str, Any]:
    """One question through one strategy, for the app and `fastmath solve`: completion, pred (no gold: outcome None)."""
    if strategy not in STRATEGIES:
        raise FastmathError(f"unknown strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
    question = question.strip()
    ((_, solution),) = STRATEGIES[strategy].solve(Setup(model, tokenizer, cfg), [(question, detect_language(question))])
    return {
        "completion": solution.completion,
        "pred": solution.pred,
        "outcome": None,
        "tokens": solution.tokens,
        "finish_reason": solution.finish_reason,
        **solution.extra,
    }


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


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description, allow_abbrev=False)
    parser.add_argument("recipe", nargs="?", help="YAML recipe (default: the adapter run's recipe.yaml)")
    parser.add_argument("--model", help="base model, hub id or local dir (default: the adapter run's)")
    parser.add_argument("--lora", help="adapter run directory (or run name in --output-dir), or 'latest' SFT run")
    parser.add_argument("--dataset", nargs="+", help="gsm8k, mgsm_zh, mgsm_en or FILE; several allowed")
    parser.add_argument("--strategies", help=f"comma-separated, from: {','.join(STRATEGIES)}")
    parser.add_argument("--samples", type=int, help="first N problems of each dataset (default: all)")
    parser.add_argument("--batch-size", type=int, help="prompts per batch (default: found automatically)")
    parser.add_argument("--max-new-tokens", type=int)
    parser.add_argument("--output-dir", default="outputs", help="where runs live (default: outputs)")
    parser.add_argument("--data-dir", type=Path, help="local copies: DIR/gsm8k/{train,test}.jsonl, DIR/mgsm/*.tsv")
    parser.add_argument("--fresh", action="store_true", help="redo problems already in the results files")
    return parser


def _adapter_dir(lora: str | None, model: str | None, output_dir: Path) -> Path | None:
    """The adapter run: --lora as given, 'latest' (or neither flag) the newest finished SFT run."""
    if lora is None and model is not None:
        return None
    if lora in (None, "latest"):
        try:
            return rundir.latest_run(output_dir, "sft")
        except FastmathError:
            raise FastmathError(
                f"no finished SFT run in {output_dir}/ to evaluate: pass --model M for a base model, "
                "or --lora RUN_DIR for an adapter (`make sft` trains one)"
            ) from None
    return rundir.adapter_run(lora, output_dir)


def base_run_dir(output_dir: Path, model: str) -> Path:
    """`outputs/base-<model>/`, with a run.json so the app lists a base model's evaluations."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(model.rstrip("/")).name).strip("-")
    run = output_dir / f"base-{name}"
    if not (run / "run.json").is_file():
        started = time.strftime("%Y-%m-%dT%H:%M:%S")
        atomic_write_json(
            run / "run.json", {"stage": "base", "base_model": model, "status": "finished", "started": started}
        )
    return run


def _resolve(args: argparse.Namespace, rest: list[str]) -> tuple[Recipe, Path | None]:
    """The recipe (the adapter run's unless one is given, + overrides and flags) and the adapter."""
    if args.recipe and "=" in args.recipe:  # `eval key=value` with no recipe file
        rest.insert(0, args.recipe)
        args.recipe = None
    overrides = parse_overrides(rest)
    if args.model:
        overrides["model.name"] = args.model
    adapter = _adapter_dir(args.lora, args.model, Path(args.output_dir))
    recipe_path = args.recipe or (adapter / "recipe.yaml" if adapter and (adapter / "recipe.yaml").is_file() else None)
    if adapter and recipe_path is None and not args.model:
        raise FastmathError(f"--lora {adapter}: no recipe.yaml to name its base model; pass --model")
    recipe = load_recipe(recipe_path, overrides)
    flags = {
        "datasets": [d for arg in args.dataset for d in arg.split(",") if d] if args.dataset else None,
        "strategies": [s.strip() for s in args.strategies.split(",") if s.strip()] if args.strategies else None,
        "samples": args.samples,
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
    }
    recipe.eval = dataclasses.replace(recipe.eval, **{k: v for k, v in flags.items() if v is not None})
    for key in ("samples", "batch_size", "max_new_tokens", "sc_samples", "tot_breadth", "tot_depth", "tot_proposals"):
        value = getattr(recipe.eval, key)
        if value is not None and value < 1:
            raise FastmathError(f"eval.{key} must be at least 1, got {value}")
    unknown = [s for s in recipe.eval.strategies if s not in STRATEGIES]
    if unknown or not recipe.eval.strategies:
        raise FastmathError(f"unknown strategy {', '.join(unknown) or '(none)'}: choose from {', '.join(STRATEGIES)}")
    return recipe, adapter


def run(argv: list[str], prog: str, all_strategies: bool) -> int:
    """Parse, load the datasets (failing fast), then the model once, then every dataset x strategy."""
    description = (__doc__ or "").split("\n")[0]
    args, rest = _parser(prog, description).parse_known_args(argv)
    if all_strategies and not args.strategies:
        args.strategies = ",".join(STRATEGIES)
    recipe, adapter = _resolve(args, rest)
    cfg = recipe.eval
    datasets = [load_dataset(name, args.data_dir) for name in cfg.datasets]
    run_dir = adapter or base_run_dir(Path(args.output_dir), recipe.model.name)

    from fastmath.models import load_for_inference

    print(f"model: {recipe.model.name}" + (f" + adapter {adapter}" if adapter else " (no adapter)"))
    model, tokenizer = load_for_inference(recipe.model, str(adapter) if adapter else None)
    meta = {"model": recipe.model.name, "adapter": str(adapter.resolve()) if adapter else None}
    train = train_source(recipe, args.data_dir)
    for name, dataset in datasets:
        shots = few_shot_exemplars(dataset, cfg, train) if "few_shot" in cfg.strategies else {}
        setup = Setup(model, tokenizer, cfg, shots, recipe.data.system_prompt)
        problems, out_dir = dataset[: cfg.samples], run_dir / "eval" / name
        summaries = {s: evaluate(setup, problems, s, out_dir, meta=meta, fresh=args.fresh) for s in cfg.strategies}
        table = comparison_table(summaries)
        print(f"\n{name}: {len(problems)} problems\n{table}results: {out_dir}")
        if all_strategies:
            title = f"# {name}: {meta['model']}" + (f" + {meta['adapter']}" if meta["adapter"] else "")
            atomic_write_text(out_dir / "comparison.md", f"{title}\n\n{table}")
    return 0


def main(argv: list[str]) -> int:
    """`python -m fastmath eval`."""
    return run(argv, "python -m fastmath eval", all_strategies=False)


def main_prompts(argv: list[str]) -> int:
    """`python -m fastmath prompts`: every strategy (or --strategies), one comparison table per dataset."""
    return run(argv, "python -m fastmath prompts", all_strategies=True)
