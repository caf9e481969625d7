"""Mine DPO pairs from the SFT model's own solutions: a correct one preferred over a wrong one.

    python -m fastmath pairs recipes/qwen2.5-7b-dpo.yaml            # newest SFT run
    python -m fastmath pairs RECIPE dpo.sft_run=outputs/<sft> dpo.samples_per_problem=8

For each training problem, sample k solutions with the batched engine and grade them with the
evaluator's grader. Problems with both right and wrong samples give pairs (on-policy, as in
iterative reasoning preference optimisation); all-right and all-wrong problems teach nothing
here and are skipped and counted. Samples are appended per problem, so an interrupted run
resumes where it stopped, and each sample's seed depends only on its problem and index, so a
resumed run draws exactly what an uninterrupted one would. The pairs file is written
atomically from the samples at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastmath import runs
from fastmath.config import Recipe
from fastmath.grading import grade
from fastmath.io import JsonlAppender, atomic_write_json, atomic_write_jsonl, exclusive, read_jsonl
from fastmath.log import log
from fastmath.tasks import training_problems

CHUNK = 32  # problems generated (and saved) together: the unit of progress on resume


def pairs_from_samples(row: dict[str, Any]) -> list[dict[str, str]]:
    """Distinct correct solutions paired with distinct wrong ones (no-answer counts as wrong)."""
    right = list(dict.fromkeys(c for c, o in zip(row["completions"], row["outcomes"], strict=True) if o == "correct"))
    wrong = list(dict.fromkeys(c for c, o in zip(row["completions"], row["outcomes"], strict=True) if o != "correct"))
    return [
        {"id": row["id"], "prompt": row["question"], "chosen": c, "rejected": r, "gold": row["gold"]}
        for c, r in zip(right, wrong, strict=False)  # as many pairs as the shorter side has
    ]


def sample_problems(recipe: Recipe, sft_run: Path, backend: str, samples_path: Path) -> None:
    """Sample and grade solutions to every problem not yet in `samples_path`, appending as chunks finish."""
    from fastmath.generation import Decoding, generate
    from fastmath.models import load_for_generation
    from fastmath.prompts import chat_messages, prompt_text

    d = recipe.dpo
    problems = training_problems(recipe.data, d.problems)
    done = {row["id"] for row in read_jsonl(samples_path)} if samples_path.exists() else set()
    todo = [p for p in problems if p.id not in done]
    if done:
        log.info(f"resuming: {len(done)} problem(s) already sampled in {samples_path}")
    if not todo:
        return
    model, tokenizer = load_for_generation(recipe.model, recipe.eval, str(sft_run), backend)
    decoding = Decoding(
        max_new_tokens=recipe.eval.max_new_tokens, do_sample=True, temperature=d.temperature,
        num_return_sequences=d.samples_per_problem, seed=recipe.eval.seed,
    )  # fmt: skip
    with JsonlAppender(samples_path) as out:
        for start in range(0, len(todo), CHUNK):
            chunk = todo[start : start + CHUNK]
            prompts = [
                prompt_text(tokenizer, chat_messages(p.question, p.lang, recipe.data.system_prompt)) for p in chunk
            ]
            for p, gens in zip(
                chunk, generate(model, tokenizer, prompts, decoding, recipe.eval.batch_size), strict=True
            ):
                texts = [g.text for g in gens]
                out.write({"id": p.id, "question": p.question, "gold": p.gold, "completions": texts,
                           "outcomes": [grade(t, p.gold, p.tolerance).outcome for t in texts]})  # fmt: skip


def beside(pairs: Path, what: str) -> Path:
    """A file that goes with a pairs file: its `samples` (resumable) or its `summary` (counts)."""
    return pairs.with_name(f"{pairs.stem}.{what}.{'jsonl' if what == 'samples' else 'json'}")


def mine_pairs(recipe: Recipe, sft_run: Path, backend: str, output: Path | None = None) -> dict[str, Any]:
    """Sample, grade and pair; returns the counts (also written beside the pairs file)."""
    output = output or sft_run / runs.PAIRS
    samples_path = beside(output, "samples")
    with exclusive(samples_path, f"pairs of {sft_run.name}"):
        sample_problems(recipe, sft_run, backend, samples_path)
        rows = list(read_jsonl(samples_path))
        pairs = [pair for row in rows for pair in pairs_from_samples(row)]
        atomic_write_jsonl(output, pairs)
    right = [sum(o == "correct" for o in row["outcomes"]) for row in rows]
    samples = sum(len(row["outcomes"]) for row in rows)
    stats = {
        "sft_run": str(sft_run),
        "problems": len(rows),
        "samples": samples,
        "sample_accuracy": round(sum(right) / max(1, samples), 4),
        "skipped_all_correct": sum(r == len(row["outcomes"]) for r, row in zip(right, rows, strict=True)),
        "skipped_all_wrong": right.count(0),
        "pairs": len(pairs),
        "output": str(output),
    }
    atomic_write_json(beside(output, "summary"), stats)
    log.info(
        f"{stats['problems']} problems, {stats['samples']} samples ({stats['sample_accuracy']:.1%} correct), "
        f"{stats['pairs']} pairs; skipped {stats['skipped_all_correct']} all-correct and "
        f"{stats['skipped_all_wrong']} all-wrong problems\nwrote {output}"
    )
    return stats


def main(inv) -> int:
    mine_pairs(inv.recipe, inv.parent, inv.backend, inv.args.output)
    return 0
