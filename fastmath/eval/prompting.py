"""What prompt strategies are built from: the prompt text (data, in prompts.yaml), dialogues,
few-shot exemplars, what a strategy's messages may use (`Ask`) and the `Setup` strategies run with.
Each strategy's own messages are in its record (`strategies`).

Every strategy speaks the language of the problem (English or Chinese) and asks for the final
line SFT trains on ("The answer is N." / "答案是 N。"), so one grader reads them all.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from fastmath import resources
from fastmath.config import EvalConfig
from fastmath.data import Problem, load_problems
from fastmath.generation import Decoding, Generation, generate, generate_batches
from fastmath.grading import final_answer_line
from fastmath.prompts import SYSTEM_PROMPTS, prompt_text

Messages = list[dict[str, str]]
Question = tuple[str, str]  # (question, language)

TEXT: dict[str, Any] = yaml.safe_load((resources.package_dir() / "eval" / "prompts.yaml").read_text(encoding="utf-8"))
# (question, worked solution, gold) per language.
COT_EXEMPLARS: dict[str, list[tuple[str, str, str]]] = {
    lang: [(e["question"], e["solution"], e["answer"]) for e in shots] for lang, shots in TEXT["cot_exemplars"].items()
}
# (index into COT_EXEMPLARS[lang], program printing the answer) per language.
POT_EXEMPLARS: dict[str, list[tuple[int, str]]] = {
    lang: [(e["exemplar"], e["program"]) for e in shots] for lang, shots in TEXT["pot_exemplars"].items()
}
SAMPLE_DATA = {"en": "sample_english_math.json", "zh": "sample_chinese_math.json"}


def dialogue(system: str, shots: Sequence[tuple[str, str]], question: str) -> Messages:
    """System turn, exemplars as earlier user/assistant turns, then the question."""
    messages = [{"role": "system", "content": system}]
    for q, a in shots:
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return messages + [{"role": "user", "content": question.strip()}]


def cot_solution(lang: str, index: int) -> str:
    """The worked solution of one CoT exemplar, ending with the final-answer line."""
    _, steps, gold = COT_EXEMPLARS[lang][index]
    return f"{steps}\n{final_answer_line(gold, lang)}"


@functools.lru_cache(maxsize=8)
def shot_pool(lang: str, train: str | None = None) -> tuple[Problem, ...]:
    """Worked training problems in `lang` to draw few-shot exemplars from.

    `train` is a task's pool (`tasks.Task.shot_source`: a train split or a file); when it holds no
    problem in `lang` or none is given, the project's own sample problems of that language are.
    """
    pool = [p for p in load_problems(train, split="train", verbose=False) if p.lang == lang] if train else []
    return tuple(pool or load_problems(str(resources.sample(SAMPLE_DATA[lang])), language=lang, verbose=False))


def select_shots(pool: Sequence[Problem], k: int, seed: int, exclude: frozenset[str] = frozenset()) -> list[Problem]:
    """k exemplars drawn with a fixed seed, never one whose question is in `exclude` (the evaluated set)."""
    allowed = [p for p in pool if p.question.strip() not in exclude]
    return random.Random(seed).sample(allowed, min(k, len(allowed)))


@dataclass(frozen=True)
class Ask:
    """What a strategy's messages may use besides the question: the system prompt SFT trains with
    (a run's data.system_prompt; None: the built-in one), and few-shot exemplars (None: `num_shots`
    drawn with `seed` from `shot_pool`)."""

    system: str | None = None
    exemplars: Sequence[Problem] | None = None
    num_shots: int = EvalConfig.num_shots
    seed: int = EvalConfig.seed

    def system_for(self, lang: str) -> str:
        return self.system or SYSTEM_PROMPTS[lang]

    def shots(self, lang: str) -> Sequence[Problem]:
        return (
            self.exemplars if self.exemplars is not None else select_shots(shot_pool(lang), self.num_shots, self.seed)
        )


# A strategy's chat messages for (question, language, what else it may use).
MessageFn = Callable[[str, str, Ask], Messages]


@dataclass
class Solution:
    """A strategy's answer to one question: the text shown, the number read, what it cost."""

    completion: str
    pred: str | None  # canonical number, None when there is no answer
    tokens: int  # generated tokens over every call the strategy made
    finish_reason: str  # "length" when the answer was cut off by a token or depth budget
    extra: dict[str, Any] = field(default_factory=dict)  # strategy-specific record fields


@dataclass
class Setup:
    """What strategies run with: model, tokenizer, settings, few-shot exemplars per language, system prompt."""

    model: Any
    tokenizer: Any
    cfg: EvalConfig
    shots: dict[str, list[Problem]] = field(default_factory=dict)
    system: str | None = None  # the run's data.system_prompt; None = the one SFT trains with by default

    def ask(self, lang: str) -> Ask:
        return Ask(self.system, self.shots.get(lang), self.cfg.num_shots, self.cfg.seed)

    def prompts(self, messages: MessageFn, questions: Sequence[Question]) -> list[str]:
        """The rendered prompt of a strategy's `messages` for every question."""
        return [prompt_text(self.tokenizer, messages(q, lang, self.ask(lang))) for q, lang in questions]

    def decoding(self, **options: Any) -> Decoding:
        """Decoding options with this evaluation's seed and answer length unless given."""
        return Decoding(**{"seed": self.cfg.seed, "max_new_tokens": self.cfg.max_new_tokens, **options})

    def batches(self, prompts: list[str], **options: Any) -> Iterator[list[tuple[int, list[Generation]]]]:
        """Generate in batches as they finish (the engine's `generate_batches`)."""
        return generate_batches(self.model, self.tokenizer, prompts, self.decoding(**options), self.cfg.batch_size)

    def generate(self, prompts: list[str], **options: Any) -> list[list[Generation]]:
        """Every prompt's samples, in input order (the engine's `generate`)."""
        return generate(self.model, self.tokenizer, prompts, self.decoding(**options), self.cfg.batch_size)
