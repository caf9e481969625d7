"""The strategy registry: how a question is put to the model, and how its answer is read back.

One record per strategy (`Strategy`): its messages, its procedure, the settings that change its
answers (recorded with its results), and whether it streams. Evaluation and `solve` read only the
record, so a new strategy is one file: a `Strategy` here, or from another package through the
`fastmath.strategies` entry point group (`plugins`). The first five are one greedy generation of
their messages (they stream); the last three are procedures over several generations or a program run:

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
from typing import Any

from fastmath import plugins
from fastmath.config import STRATEGY_NAMES, strategy_names
from fastmath.errors import FastmathError
from fastmath.eval import tot
from fastmath.eval.prompting import (
    COT_EXEMPLARS,
    POT_EXEMPLARS,
    TEXT,
    Ask,
    MessageFn,
    Messages,
    Question,
    Setup,
    Solution,
    cot_solution,
    dialogue,
)
from fastmath.eval.sandbox import extract_program, program_answer
from fastmath.generation import Generation
from fastmath.grading import extract_answer
from fastmath.prompts import chat_messages

# Lines with which a model that ignores the end of its turn starts inventing the next problem.
RUN_ON_STOPS = ("\nQuestion:", "\n\nQ:", "\n问题：")
SANDBOX_WORKERS = min(8, os.cpu_count() or 1)

Answers = Iterator[tuple[int, Solution]]  # (question index, solution) as answers complete, in any order


def _no_settings(setup: Setup) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Strategy:
    name: str
    description: str  # one line, for tables and the app
    messages: MessageFn  # what it puts to the model (a procedure's first prompt)
    # None: one greedy generation of `messages`, whose answer the grader reads; else how it solves
    procedure: Callable[[Strategy, Setup, Sequence[Question]], Answers] | None = None
    settings: Callable[[Setup], dict[str, Any]] = _no_settings  # what changes its answers, recorded

    @property
    def streams(self) -> bool:
        """One generation of its messages, shown token by token; a procedure's answer comes whole."""
        return self.procedure is None

    def solve(self, setup: Setup, questions: Sequence[Question]) -> Answers:
        return (self.procedure or _prompted)(self, setup, questions)


def _prompted(strategy: Strategy, setup: Setup, questions: Sequence[Question]) -> Answers:
    """One greedy generation of the strategy's prompt; the grader reads its answer."""
    for batch in setup.batches(setup.prompts(strategy.messages, questions), stop=RUN_ON_STOPS):
        for i, (g,) in batch:
            yield i, Solution(g.text, extract_answer(g.text), g.tokens, g.finish_reason)


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


def _self_consistency(strategy: Strategy, setup: Setup, questions: Sequence[Question]) -> Answers:
    cfg = setup.cfg
    for batch in setup.batches(
        setup.prompts(strategy.messages, questions),
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


def _pot(strategy: Strategy, setup: Setup, questions: Sequence[Question]) -> Answers:
    unsafe = setup.cfg.unsafe_no_os_sandbox
    with ThreadPoolExecutor(SANDBOX_WORKERS) as pool:  # programs run while the next batch waits
        for batch in setup.batches(setup.prompts(strategy.messages, questions), stop=RUN_ON_STOPS):
            solutions = pool.map(lambda g: run_program(g, unsafe), [samples[0] for _, samples in batch])
            yield from zip([i for i, _ in batch], solutions, strict=True)


# --- each strategy's messages ---------------------------------------------------------------------


def _zero_shot(question: str, lang: str, ask: Ask) -> Messages:
    return chat_messages(question, lang, ask.system_for(lang))


def _few_shot(question: str, lang: str, ask: Ask) -> Messages:
    return dialogue(ask.system_for(lang), [(p.question, p.target()) for p in ask.shots(lang)], question)


def _cot(question: str, lang: str, ask: Ask) -> Messages:
    shots = [(q, cot_solution(lang, i)) for i, (q, _, _) in enumerate(COT_EXEMPLARS[lang])]
    return dialogue(ask.system_for(lang), shots, question)


def _zero_shot_cot(question: str, lang: str, ask: Ask) -> Messages:
    return chat_messages(f"{question.strip()}\n{TEXT['zero_shot_cot_trigger'][lang]}", lang, ask.system_for(lang))


def _structured_cot(question: str, lang: str, ask: Ask) -> Messages:
    return dialogue(TEXT["structured_cot_system"][lang], [], question)  # its own instructions, not the run's


def _pot_messages(question: str, lang: str, ask: Ask) -> Messages:
    shots = [(COT_EXEMPLARS[lang][i][0], f"```python\n{code}```") for i, code in POT_EXEMPLARS[lang]]
    return dialogue(TEXT["pot_system"][lang], shots, question)


def _recorded(*keys: str) -> Callable[[Setup], dict[str, Any]]:
    """Settings: these evaluation keys' values."""
    return lambda setup: {key: getattr(setup.cfg, key) for key in keys}


def _few_shot_settings(setup: Setup) -> dict[str, Any]:
    exemplars = {lang: [p.id for p in shots] for lang, shots in setup.shots.items()}
    return {"num_shots": setup.cfg.num_shots, "exemplars": exemplars}


def _tot_settings(setup: Setup) -> dict[str, Any]:
    keys = _recorded("tot_breadth", "tot_depth", "tot_proposals", "temperature")(setup)
    return {**keys, "call_budget": tot.tot_budget(setup.cfg)}


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("zero_shot", "the question alone, as SFT trains on it", _zero_shot),
        Strategy(
            "few_shot",
            "k worked solutions from the train split as earlier turns",
            _few_shot,
            settings=_few_shot_settings,
        ),  # fmt: skip
        Strategy("cot", "8 hand-written step-by-step exemplars ending 'The answer is N.'", _cot),
        Strategy("zero_shot_cot", "the question + 'Let's think step by step.'", _zero_shot_cot),
        Strategy("structured_cot", "fixed sections: known facts, goal, steps, answer", _structured_cot),
        Strategy(
            "tot",
            "tree of thoughts: beam search over solution lines, judged by a value prompt",
            _zero_shot,
            tot.solve,
            _tot_settings,
        ),  # fmt: skip
        Strategy(
            "self_consistency",
            "cot sampled k times, majority vote (maj@k)",
            _cot,
            _self_consistency,
            _recorded("sc_samples", "temperature"),
        ),  # fmt: skip
        Strategy(
            "pot",
            "program of thought: the model writes Python, a sandbox runs it",
            _pot_messages,
            _pot,
            _recorded("unsafe_no_os_sandbox"),
        ),  # fmt: skip
    )
}
assert tuple(STRATEGIES) == STRATEGY_NAMES, "config.STRATEGY_NAMES lists the built-in strategies a recipe may name"


def get(name: str) -> Strategy:
    """A strategy's record: a built-in one, or an installed plugin's."""
    if name in STRATEGIES:
        return STRATEGIES[name]
    if name in plugins.names(plugins.STRATEGIES):
        return plugins.load(plugins.STRATEGIES, name, Strategy)
    raise FastmathError(f"unknown strategy {name!r}: expected one of {', '.join(strategy_names())}")


def build_messages(
    strategy: str,
    question: str,
    lang: str,
    *,
    exemplars: Sequence[Any] | None = None,
    num_shots: int = Ask.num_shots,
    seed: int = Ask.seed,
    system: str | None = None,
) -> Messages:
    """The chat messages `strategy` puts to the model (for tot: its proposals; self_consistency: cot's).

    `system` replaces the system prompt SFT trains with (a recipe's data.system_prompt), where a
    strategy uses that one; structured_cot and pot keep their own instructions.
    """
    return get(strategy).messages(question, lang, Ask(system, exemplars, num_shots, seed))
