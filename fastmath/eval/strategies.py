"""Prompt strategies: how a question is put to the model, and how its answer is read back.

The first five are one greedy generation of `prompting.build_messages` (PROMPT_STRATEGIES); the
last three are procedures over several generations or a program run:

- zero_shot: exactly `prompts.chat_messages`, the prompt a fine-tuned model was trained on.
- few_shot: k worked solutions from the TRAIN split (fixed seed; any exemplar whose question is
  in the evaluated set is dropped), as earlier chat turns.
- cot: the 8 worked exemplars of Wei et al. (2022) (English) or 8 of our own (Chinese).
- zero_shot_cot: the question plus "Let's think step by step." (Kojima et al., 2022).
- structured_cot: a fixed layout: known facts, goal, steps, answer.
- tot: tree of thoughts (Yao et al., 2023) as a beam search over solution lines (`tot`).
- self_consistency: `cot` sampled `sc_samples` times, majority vote over the answers (maj@k).
- pot: program of thought: the model writes Python, `sandbox` runs it in OS isolation, the
  printed number is the answer (no program, or a failed run, is no answer).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from fastmath.config import STRATEGY_NAMES
from fastmath.eval import tot
from fastmath.eval.prompting import Question, Setup, Solution
from fastmath.eval.sandbox import extract_program, program_answer
from fastmath.generation import Generation
from fastmath.grading import extract_answer

# Lines with which a model that ignores the end of its turn starts inventing the next problem.
RUN_ON_STOPS = ("\nQuestion:", "\n\nQ:", "\n问题：")
SANDBOX_WORKERS = min(8, os.cpu_count() or 1)
PROMPT_STRATEGIES = ("zero_shot", "few_shot", "cot", "zero_shot_cot", "structured_cot")

Solver = Callable[[Setup, Sequence[Question]], Iterator[tuple[int, Solution]]]


@dataclass(frozen=True)
class Strategy:
    name: str
    description: str  # one line, for tables and the app
    solve: Solver  # yields (question index, solution) as answers complete, in any order


def _prompted(strategy: str) -> Solver:
    """One greedy generation of the strategy's prompt; the grader reads its answer."""

    def solve(setup: Setup, questions: Sequence[Question]) -> Iterator[tuple[int, Solution]]:
        for batch in setup.batches(setup.prompts(strategy, questions), stop=RUN_ON_STOPS):
            for i, (g,) in batch:
                yield i, Solution(g.text, extract_answer(g.text), g.tokens, g.finish_reason)

    return solve


def _vote(samples: list[Generation]) -> Solution:
    """maj@k: the most common answer (first seen wins a tie); its first sample is the completion shown."""
    preds = [extract_answer(g.text) for g in samples]
    votes = Counter(p for p in preds if p is not None)
    pred = votes.most_common(1)[0][0] if votes else None
    shown = samples[preds.index(pred)]
    record = [
        {"completion": g.text, "pred": p, "finish_reason": g.finish_reason} for g, p in zip(samples, preds, strict=True)
    ]
    return Solution(shown.text, pred, sum(g.tokens for g in samples), shown.finish_reason, {"samples": record})


def _self_consistency(setup: Setup, questions: Sequence[Question]) -> Iterator[tuple[int, Solution]]:
    cfg = setup.cfg
    for batch in setup.batches(
        setup.prompts("self_consistency", questions),
        stop=RUN_ON_STOPS,
        do_sample=True,
        temperature=cfg.temperature,
        num_return_sequences=cfg.sc_samples,
    ):
        for i, samples in batch:
            yield i, _vote(samples)


def run_program(g: Generation, allow_unsafe: bool = False) -> Solution:
    """Run the completion's program in the sandbox; its last printed line holds the answer."""
    printed, result = program_answer(g.text, allow_unsafe=allow_unsafe)
    extra = {
        "program": extract_program(g.text),
        "sandbox_error": "no program" if result is None else result.error,
        "isolation": result.isolation if result is not None else None,
    }
    return Solution(g.text, extract_answer(printed) if printed else None, g.tokens, g.finish_reason, extra)


def _pot(setup: Setup, questions: Sequence[Question]) -> Iterator[tuple[int, Solution]]:
    unsafe = setup.cfg.unsafe_no_os_sandbox
    with ThreadPoolExecutor(SANDBOX_WORKERS) as pool:  # programs run while the next batch waits
        for batch in setup.batches(setup.prompts("pot", questions), stop=RUN_ON_STOPS):
            solutions = pool.map(lambda g: run_program(g, unsafe), [samples[0] for _, samples in batch])
            yield from zip([i for i, _ in batch], solutions, strict=True)


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("zero_shot", "the question alone, as SFT trains on it", _prompted("zero_shot")),
        Strategy("few_shot", "k worked solutions from the train split as earlier turns", _prompted("few_shot")),
        Strategy("cot", "8 hand-written step-by-step exemplars ending 'The answer is N.'", _prompted("cot")),
        Strategy("zero_shot_cot", "the question + 'Let's think step by step.'", _prompted("zero_shot_cot")),
        Strategy("structured_cot", "fixed sections: known facts, goal, steps, answer", _prompted("structured_cot")),
        Strategy("tot", "tree of thoughts: beam search over solution lines, judged by a value prompt", tot.solve),
        Strategy("self_consistency", "cot sampled k times, majority vote (maj@k)", _self_consistency),
        Strategy("pot", "program of thought: the model writes Python, a sandbox runs it", _pot),
    )
}
assert tuple(STRATEGIES) == STRATEGY_NAMES, "config.STRATEGY_NAMES lists the strategies a recipe may name"
