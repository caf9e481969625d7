"""`python -m fastmath suite`: one model or run over every shipped benchmark, one strategy, one table.

    python -m fastmath suite --data-dir ../shared/data                # newest SFT run, all tasks, CoT
    python -m fastmath suite --lora outputs/<run> --strategy zero_shot --samples 100
    python -m fastmath suite --model Qwen/Qwen2.5-7B-Instruct --dataset gsm8k,svamp,cmath

Is a gain on GSM8K real or memorised? The table puts it beside problems worded differently
(SVAMP), more varied (ASDiv), with large numbers (GSM-Hard), translated (MGSM) and Chinese
workbooks by grade (CMATH, and CMATH with distracting sentences). Results are eval's own files,
`<run>/eval/<task>/<strategy>.jsonl` and `summary.json`, so an interrupted suite resumes where it
stopped and `eval` and `suite` share their work; the table is also written to
`<run>/eval/suite-<strategy>.md`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastmath import runs
from fastmath.errors import FastmathError
from fastmath.eval.evaluate import Evaluated, evaluate_tasks
from fastmath.io import atomic_write_text


def _row(name: str, s: dict[str, Any], extra: str = "") -> str:
    lo, hi = s["ci95"]
    return f"| {name} | {100 * s['accuracy']:.1f}% | [{100 * lo:.1f}, {100 * hi:.1f}] | {s['n']} |{extra}"


def suite_table(results: list[Evaluated], strategy: str) -> str:
    """A Markdown table, one row per benchmark, and one per group of a task that has groups (CMATH's grades)."""
    lines = ["| benchmark | accuracy | 95% CI | n | no answer |", "|---|---|---|---|---|"]
    for r in results:
        s = r.summaries[strategy]
        lines.append(_row(r.task.name, s, f" {100 * s['no_answer_rate']:.1f}% |"))
        field = r.task.fields.group
        lines += [_row(f"{r.task.name} · {field} {g}", gs, " |") for g, gs in s.get("groups", {}).items()]
    return "\n".join(lines) + "\n"


def main(inv) -> int:
    """Every benchmark (or `--dataset` list) with one strategy: eval's files, then one table."""
    strategies = inv.recipe.eval.strategies
    if len(strategies) != 1:
        raise FastmathError(f"suite runs one strategy, got {', '.join(strategies)}: pass --strategy NAME")
    run_dir, meta, results = evaluate_tasks(inv.recipe, inv.parent, inv.backend, inv.args.data_dir, inv.args.fresh)
    strategy = strategies[0]
    text = suite_table(results, strategy)
    title = f"# suite · {strategy}: {meta['model']}" + (f" + {meta['adapter']}" if meta["adapter"] else "")
    samples = inv.recipe.eval.samples
    note = f"first {samples} problems of each benchmark" if samples else "every problem of each benchmark"
    path = Path(run_dir) / runs.EVAL / f"suite-{strategy}.md"
    atomic_write_text(path, f"{title}\n\n{note}\n\n{text}")
    print(f"{title}\n{note}\n\n{text}\ntable: {path}\nper problem: {path.parent}/<benchmark>/{strategy}.jsonl")
    return 0
