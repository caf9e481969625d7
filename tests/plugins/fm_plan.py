"""A strategy from outside fastmath, in one file (its record, `STRATEGY`): plan-and-solve prompting
(Wang et al., 2023), the question followed by an instruction to plan first."""

from __future__ import annotations

from fastmath.eval.prompting import Ask, Messages
from fastmath.eval.strategies import Strategy
from fastmath.prompts import chat_messages

PLAN = "Let's first understand the problem and devise a plan, then carry it out step by step."


def messages(question: str, lang: str, ask: Ask) -> Messages:
    return chat_messages(f"{question.strip()}\n{PLAN}", lang, ask.system_for(lang))


STRATEGY = Strategy("plan_first", "the question + a plan-then-solve instruction", messages,
                    settings=lambda setup: {"plan": PLAN})  # fmt: skip
