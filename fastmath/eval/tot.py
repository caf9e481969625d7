"""Tree of thoughts (Yao et al., 2023) as a beam search over solution lines, judged by a value prompt.

Problems are searched in groups in lock-step, so each round is two batched generate calls: every
open state in a beam (at most b; 1 in the first round) samples k next lines (stopping at a
newline), each distinct new state is judged once by the value prompt (greedy: sure / likely /
impossible -> 20 / 1 / 0.001), and the b best states, finished ones included, are kept. Calls per
problem <= d * (b*k + b*k) = `tot_budget`; a beam that has finished stops early. The answer is the
best finished state's (else the best state's, with finish reason "length").
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from fastmath.config import EvalConfig
from fastmath.eval.prompting import TEXT, MessageFn, Question, Setup, Solution, dialogue
from fastmath.generation import auto_batch_size
from fastmath.grading import extract_answer, final_answer_line
from fastmath.prompts import SYSTEM_PROMPTS, prompt_text

# Yao et al.'s value scale. `不可能` is listed before `可能`, so the earliest match reads it whole.
VALUE_WORDS = re.compile(r"impossible|sure|likely|不可能|肯定|可能", re.IGNORECASE)
VALUE_SCORES = {"sure": 20.0, "肯定": 20.0, "likely": 1.0, "可能": 1.0, "impossible": 0.001, "不可能": 0.001}
UNJUDGED_SCORE = VALUE_SCORES["likely"]  # a judge that answers neither way gives no evidence either way
# The start of the final line ("The answer is", "答案是"): a step holding it ends a branch.
FINAL_PHRASE = {lang: final_answer_line("0", lang).rsplit("0", 1)[0].strip().lower() for lang in SYSTEM_PROMPTS}
STEP_TOKENS = 96  # one solution line
VALUE_TOKENS = 8  # one judgement word


@dataclass(frozen=True)
class State:
    """A partial solution in the beam: its lines, the judge's score, whether it is finished."""

    steps: tuple[str, ...]
    score: float = UNJUDGED_SCORE
    done: bool = False


def tot_budget(cfg: EvalConfig) -> int:
    """Most generations per problem: each of `depth` rounds, at most `breadth` open states propose
    `proposals` next lines each, and every distinct proposal is judged once."""
    per_round = cfg.tot_breadth * cfg.tot_proposals
    return cfg.tot_depth * (per_round + per_round)


def _propose_prompt(setup: Setup, messages: MessageFn, question: Question, state: State) -> str:
    """The strategy's prompt (zero-shot's) with the lines so far as the start of the answer: the model
    writes the next."""
    return setup.prompts(messages, [question])[0] + "".join(f"{s}\n" for s in state.steps)


def _value_prompt(setup: Setup, question: Question, state: State) -> str:
    text, lang = question
    ask = TEXT["tot_value_question"][lang].format(question=text.strip(), steps="\n".join(state.steps))
    return prompt_text(setup.tokenizer, dialogue(TEXT["tot_value_system"][lang], [], ask))


def value(judgement: str) -> float:
    m = VALUE_WORDS.search(judgement)
    return VALUE_SCORES[m[0].lower()] if m else UNJUDGED_SCORE


def _extend(state: State, step: str, lang: str) -> State:
    """`state` plus one proposed line; an empty proposal (the model ended its answer) finishes it."""
    step = step.strip()
    if not step:
        return replace(state, done=True)
    return State(state.steps + (step,), done=FINAL_PHRASE[lang] in step.lower())


def _search(setup: Setup, messages: MessageFn, questions: dict[int, Question]) -> Iterator[tuple[int, Solution]]:
    """One group of problems, searched in lock-step (see the module docstring)."""
    cfg = setup.cfg
    beams = {i: [State(())] for i in questions}
    calls, tokens = dict.fromkeys(questions, 0), dict.fromkeys(questions, 0)
    for _ in range(cfg.tot_depth):
        open_states = [(i, s) for i in questions for s in beams[i] if not s.done]
        if not open_states:
            break
        proposals = setup.generate(
            [_propose_prompt(setup, messages, questions[i], s) for i, s in open_states],
            max_new_tokens=min(cfg.max_new_tokens, STEP_TOKENS),
            stop=("\n",),
            do_sample=True,
            temperature=cfg.temperature,
            num_return_sequences=cfg.tot_proposals,
        )
        fresh: dict[int, dict[tuple[str, ...], State]] = {i: {} for i in questions}
        for (i, state), samples in zip(open_states, proposals, strict=True):
            calls[i] += len(samples)
            tokens[i] += sum(g.tokens for g in samples)
            for g in samples:
                new = _extend(state, g.text, questions[i][1])
                fresh[i].setdefault(new.steps, new)
        judged = [(i, s) for i in questions for s in fresh[i].values()]
        values = setup.generate(
            [_value_prompt(setup, questions[i], s) for i, s in judged],
            max_new_tokens=min(cfg.max_new_tokens, VALUE_TOKENS),
            stop=("\n",),
        )
        for i in questions:
            beams[i] = [s for s in beams[i] if s.done]
        for (i, state), (g,) in zip(judged, values, strict=True):
            calls[i] += 1
            tokens[i] += g.tokens
            beams[i].append(replace(state, score=value(g.text)))
        for i in questions:
            beams[i] = sorted(beams[i], key=lambda s: -s.score)[: cfg.tot_breadth]
    for i in questions:
        best = max(beams[i], key=lambda s: (s.done, s.score))
        completion = "\n".join(best.steps)
        extra = {"calls": calls[i], "score": best.score}
        yield i, Solution(completion, extract_answer(completion), tokens[i], "stop" if best.done else "length", extra)


def solve(strategy: Any, setup: Setup, questions: Sequence[Question]) -> Iterator[tuple[int, Solution]]:
    """ToT over groups of problems (the batch size, or the automatic one), each group saved as it ends;
    proposals continue `strategy.messages`."""
    group = setup.cfg.batch_size or auto_batch_size(setup.model, 1)
    for start in range(0, len(questions), group):
        chunk = {i: questions[i] for i in range(start, min(start + group, len(questions)))}
        yield from _search(setup, strategy.messages, chunk)
