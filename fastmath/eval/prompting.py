"""What a prompt strategy puts to the model: the prompt text (data, in prompts.yaml), the chat
messages of each strategy, few-shot exemplars, and the `Setup` strategies run with.

Every strategy speaks the language of the problem (English or Chinese) and asks for the final
line SFT trains on ("The answer is N." / "答案是 N。"), so one grader reads them all.
"""

from __future__ import annotations

import functools
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from fastmath import resources
from fastmath.config import EvalConfig
from fastmath.data import Problem, load_problems
from fastmath.errors import FastmathError
from fastmath.generation import Decoding, Generation, generate, generate_batches
from fastmath.grading import final_answer_line
from fastmath.prompts import SYSTEM_PROMPTS, chat_messages, prompt_text

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

    `train` (or $FASTMATH_GSM8K_TRAIN) is a train-split source; when it holds no problem in `lang`
    (GSM8K has no Chinese) or none is given, the project's own sample problems of that language are.
    """
    source = train or os.environ.get("FASTMATH_GSM8K_TRAIN")
    pool = [p for p in load_problems(source, split="train", verbose=False) if p.lang == lang] if source else []
    return tuple(pool or load_problems(str(resources.sample(SAMPLE_DATA[lang])), language=lang, verbose=False))


def select_shots(pool: Sequence[Problem], k: int, seed: int, exclude: frozenset[str] = frozenset()) -> list[Problem]:
    """k exemplars drawn with a fixed seed, never one whose question is in `exclude` (the evaluated set)."""
    allowed = [p for p in pool if p.question.strip() not in exclude]
    return random.Random(seed).sample(allowed, min(k, len(allowed)))


def build_messages(
    strategy: str,
    question: str,
    lang: str,
    *,
    exemplars: Sequence[Problem] | None = None,
    num_shots: int = EvalConfig.num_shots,
    seed: int = EvalConfig.seed,
    system: str | None = None,
) -> Messages:
    """The chat messages `strategy` puts to the model (for tot: its proposals; self_consistency: cot's).

    few_shot uses `exemplars` when given, else `num_shots` drawn with `seed` from `shot_pool(lang)`.
    `system` replaces the system prompt SFT trains with (a recipe's data.system_prompt), where a
    strategy uses that one; structured_cot and pot keep their own instructions.
    """
    system = system or SYSTEM_PROMPTS[lang]
    if strategy in ("zero_shot", "tot"):
        return chat_messages(question, lang, system)
    if strategy == "few_shot":
        shots = exemplars if exemplars is not None else select_shots(shot_pool(lang), num_shots, seed)
        return dialogue(system, [(p.question, p.target()) for p in shots], question)
    if strategy in ("cot", "self_consistency"):
        shots = [(q, cot_solution(lang, i)) for i, (q, _, _) in enumerate(COT_EXEMPLARS[lang])]
        return dialogue(system, shots, question)
    if strategy == "zero_shot_cot":
        return chat_messages(f"{question.strip()}\n{TEXT['zero_shot_cot_trigger'][lang]}", lang, system)
    if strategy == "structured_cot":
        return dialogue(TEXT["structured_cot_system"][lang], [], question)
    if strategy == "pot":
        shots = [(COT_EXEMPLARS[lang][i][0], f"```python\n{code}```") for i, code in POT_EXEMPLARS[lang]]
        return dialogue(TEXT["pot_system"][lang], shots, question)
    raise FastmathError(f"unknown strategy {strategy!r}")


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

    def prompts(self, strategy: str, questions: Sequence[Question]) -> list[str]:
        """The rendered prompt of `strategy` for every question."""
        cfg = self.cfg
        return [
            prompt_text(
                self.tokenizer,
                build_messages(
                    strategy,
                    q,
                    lang,
                    exemplars=self.shots.get(lang),
                    num_shots=cfg.num_shots,
                    seed=cfg.seed,
                    system=self.system,
                ),
            )  # fmt: skip
            for q, lang in questions
        ]

    def decoding(self, **options: Any) -> Decoding:
        """Decoding options with this evaluation's seed and answer length unless given."""
        return Decoding(**{"seed": self.cfg.seed, "max_new_tokens": self.cfg.max_new_tokens, **options})

    def batches(self, prompts: list[str], **options: Any) -> Iterator[list[tuple[int, list[Generation]]]]:
        """Generate in batches as they finish (the engine's `generate_batches`)."""
        return generate_batches(self.model, self.tokenizer, prompts, self.decoding(**options), self.cfg.batch_size)

    def generate(self, prompts: list[str], **options: Any) -> list[list[Generation]]:
        """Every prompt's samples, in input order (the engine's `generate`)."""
        return generate(self.model, self.tokenizer, prompts, self.decoding(**options), self.cfg.batch_size)
