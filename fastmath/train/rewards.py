"""GRPO's rewards, from fastmath's grader: plain functions with TRL's reward-function signature,
chosen by name with a weight each (`grpo.rewards: {correctness: 1.0, answer_format: 0.2}`); a
dotted path (`my_module.my_reward`) names a user's own function, imported after the backend.

TRL calls each as `f(prompts=..., completions=..., completion_ids=..., **columns)` once per
generation batch, one value per completion; `columns` are the dataset's other columns (`gold`,
`lang`, `tolerance`), repeated like the prompts. With chat prompts a completion is `[{"role": "assistant",
"content": text}]`. A function's `__name__` names its metrics: `rewards/<name>/mean` and `/std`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

from fastmath.config import GRPOConfig
from fastmath.errors import FastmathError
from fastmath.grading import final_line_answer, grade


def completion_text(completion: str | list[dict[str, Any]]) -> str:
    """The completion's text, whether TRL passes a string or an assistant turn."""
    if isinstance(completion, str):
        return completion
    return "".join(m["content"] for m in completion if m.get("role") == "assistant" and isinstance(m["content"], str))


def correctness(
    completions: Sequence, gold: Sequence[str], tolerance: Sequence[float] | None = None, **_: Any
) -> list[float]:
    """1 when the grader marks the answer correct against the gold (under the task's tolerance), else 0."""
    tolerance = tolerance if tolerance is not None else [0.0] * len(gold)
    return [
        float(grade(completion_text(c), g, tol).outcome == "correct")
        for c, g, tol in zip(completions, gold, tolerance, strict=True)
    ]


def answer_format(completions: Sequence, lang: Sequence[str], **_: Any) -> list[float]:
    """1 when the completion ends with the final-answer line the evaluator reads ("The answer is N."), else 0."""
    ended = [final_line_answer(completion_text(c), lg) for c, lg in zip(completions, lang, strict=True)]
    return [float(number is not None) for number in ended]


class Overlong:
    """DAPO's soft overlong penalty: 0 up to `max_length - buffer` tokens, then down to -1 at `max_length`.

    A class rather than a closure so that it pickles; `__name__` names its metrics.
    """

    __name__ = "overlong"

    def __init__(self, max_length: int, buffer: int):
        self.start, self.buffer = max_length - buffer, buffer

    def __call__(self, completion_ids: Sequence[Sequence[int]], **_: Any) -> list[float]:
        return [max(-1.0, min(0.0, (self.start - len(ids)) / self.buffer)) for ids in completion_ids]


# The shipped rewards by name, each built from the recipe's grpo section.
REWARDS: dict[str, Callable[[GRPOConfig], Callable]] = {
    "correctness": lambda g: correctness,
    "answer_format": lambda g: answer_format,
    "overlong": lambda g: Overlong(g.max_completion_length, g.overlong_buffer),  # negative already
}


def _own(path: str) -> Callable:
    """A user's reward function named `module.function` (or `module:function`)."""
    module, _, name = path.replace(":", ".").rpartition(".")
    try:
        func = getattr(importlib.import_module(module), name)
    except Exception as e:  # not importable, or no such function: the user's module, named
        raise FastmathError(f"grpo.rewards: cannot load {path!r} ({type(e).__name__}: {e}); check the "
                            "module is on PYTHONPATH and defines that function") from None  # fmt: skip
    if not callable(func):
        raise FastmathError(f"grpo.rewards: {path!r} is not a function")
    return func


def reward_functions(g: GRPOConfig) -> tuple[list[Callable], list[float]]:
    """TRL's `reward_funcs` and `reward_weights` from `grpo.rewards`; a weight of 0 leaves its function out."""
    funcs, weights = [], []
    for name, weight in g.rewards.items():
        if weight == 0:
            continue
        if name in REWARDS:
            funcs.append(REWARDS[name](g))
        elif "." in name or ":" in name:
            funcs.append(_own(name))
        else:
            raise FastmathError(
                f"grpo.rewards: unknown reward {name!r}; use {', '.join(REWARDS)}, or module.function for your own"
            )
        weights.append(weight)
    if not funcs:
        raise FastmathError("grpo.rewards: every weight is 0, so nothing rewards anything; give one a weight")
    return funcs, weights
