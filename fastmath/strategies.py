"""Prompt strategies: how a question is put to the model, and how its answer is read back.

Every strategy speaks the language of the problem (English or Chinese prompts) and asks for the
final line SFT trains on ("The answer is N." / "答案是 N。"), so one grader reads them all. The
first five are one greedy generation of `build_messages` (PROMPT_STRATEGIES); the last three are
procedures over several generations or a program run:

- zero_shot: exactly `prompts.chat_messages`, the prompt a fine-tuned model was trained on.
- few_shot: k worked solutions from the TRAIN split (fixed seed; any exemplar whose question is
  in the evaluated set is dropped), as earlier chat turns.
- cot: the 8 worked exemplars of Wei et al. (2022) (English) or 8 of our own (Chinese).
- zero_shot_cot: the question plus "Let's think step by step." (Kojima et al., 2022).
- structured_cot: a fixed layout: known facts, goal, steps, answer.
- tot: tree of thoughts (Yao et al., 2023) as a beam search over solution lines, judged by a
  value prompt; see `_tot_group` for its call budget.
- self_consistency: `cot` sampled `sc_samples` times, majority vote over the answers (maj@k).
- pot: program of thought: the model writes Python, `sandbox` runs it, the printed number is
  the answer (no program, or a failed run, is no answer).
"""

from __future__ import annotations

import functools
import os
import random
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from fastmath.config import EvalConfig
from fastmath.data import Problem, load_problems
from fastmath.errors import FastmathError
from fastmath.generation import Decoding, Generation, auto_batch_size, generate_batches
from fastmath.grading import extract_answer, final_answer_line
from fastmath.prompts import SYSTEM_PROMPTS, chat_messages
from fastmath.sandbox import extract_program, run_program
from fastmath.templates import prompt_text
from fastmath.tiny import DATA_DIR

Messages = list[dict[str, str]]
Question = tuple[str, str]  # (question, language)

# Lines with which a model that ignores the end of its turn starts inventing the next problem.
RUN_ON_STOPS = ("\nQuestion:", "\n\nQ:", "\n问题：")
SANDBOX_WORKERS = min(8, os.cpu_count() or 1)
SAMPLE_DATA = {"en": DATA_DIR / "sample_english_math.json", "zh": DATA_DIR / "sample_chinese_math.json"}

# (question, worked solution, gold). English: the 8 GSM8K-style exemplars of Wei et al. (2022).
COT_EXEMPLARS: dict[str, list[tuple[str, str, str]]] = {
    "en": [
        (
            "There are 15 trees in the grove. Grove workers will plant trees in the grove today. After they are "
            "done, there will be 21 trees. How many trees did the grove workers plant today?",
            "There are 15 trees originally.\nThen there were 21 trees after some more were planted.\n"
            "So there must have been 21 - 15 = 6.",
            "6",
        ),
        (
            "If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?",
            "There are originally 3 cars.\n2 more cars arrive.\n3 + 2 = 5.",
            "5",
        ),
        (
            "Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left in total?",
            "Originally, Leah had 32 chocolates.\nHer sister had 42.\nSo in total they had 32 + 42 = 74.\n"
            "After eating 35, they had 74 - 35 = 39.",
            "39",
        ),
        (
            "Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How many lollipops "
            "did Jason give to Denny?",
            "Jason started with 20 lollipops.\nThen he had 12 after giving some to Denny.\n"
            "So he gave Denny 20 - 12 = 8.",
            "8",
        ),
        (
            "Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many toys does he "
            "have now?",
            "Shawn started with 5 toys.\nIf he got 2 toys each from his mom and dad, then that is 4 more toys.\n"
            "5 + 4 = 9.",
            "9",
        ),
        (
            "There were nine computers in the server room. Five more computers were installed each day, from "
            "monday to thursday. How many computers are now in the server room?",
            "There were originally 9 computers.\nFor each of 4 days, 5 more computers were added.\n"
            "So 5 * 4 = 20 computers were added.\n9 + 20 is 29.",
            "29",
        ),
        (
            "Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. How many "
            "golf balls did he have at the end of wednesday?",
            "Michael started with 58 golf balls.\nAfter losing 23 on tuesday, he had 58 - 23 = 35.\n"
            "After losing 2 more, he had 35 - 2 = 33 golf balls.",
            "33",
        ),
        (
            "Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
            "Olivia had 23 dollars.\n5 bagels for 3 dollars each will be 5 x 3 = 15 dollars.\n"
            "So she has 23 - 15 dollars left.\n23 - 15 is 8.",
            "8",
        ),
    ],
    "zh": [
        (
            "小红有 12 个苹果，她送给同学 5 个，又从妈妈那里得到 8 个。她现在有多少个苹果？",
            "送出 5 个后，她还有 12 - 5 = 7 个。\n又得到 8 个，一共有 7 + 8 = 15 个。",
            "15",
        ),
        (
            "一本故事书 18 元，一支钢笔 7 元。小明买了 2 本故事书和 3 支钢笔，一共花了多少元？",
            "故事书花了 2 × 18 = 36 元。\n钢笔花了 3 × 7 = 21 元。\n一共花了 36 + 21 = 57 元。",
            "57",
        ),
        (
            "学校买来 240 本新书，平均分给 6 个班，每个班把分到的书的一半放进图书角。每个班的图书角放了多少本书？",
            "每个班分到 240 ÷ 6 = 40 本。\n图书角放了一半，就是 40 ÷ 2 = 20 本。",
            "20",
        ),
        (
            "一辆公交车上原来有 35 人，到站后下去 12 人，又上来 9 人。车上现在有多少人？",
            "下去 12 人后，车上有 35 - 12 = 23 人。\n又上来 9 人，现在有 23 + 9 = 32 人。",
            "32",
        ),
        (
            "王叔叔每天骑车 8 千米去上班，下班沿原路返回。他一周工作 5 天，一周一共骑车多少千米？",
            "每天往返一共骑 8 × 2 = 16 千米。\n一周骑 16 × 5 = 80 千米。",
            "80",
        ),
        (
            "果园里有桃树 45 棵，梨树的棵数是桃树的 3 倍，苹果树比梨树少 20 棵。果园里有苹果树多少棵？",
            "梨树有 45 × 3 = 135 棵。\n苹果树比梨树少 20 棵，有 135 - 20 = 115 棵。",
            "115",
        ),
        (
            "一个长方形花坛长 12 米，宽 5 米。沿着它的四周围一圈栅栏，每米栅栏 15 元，一共需要多少元？",
            "花坛的周长是 (12 + 5) × 2 = 34 米。\n栅栏一共需要 34 × 15 = 510 元。",
            "510",
        ),
        (
            "妈妈买了 3 千克苹果，每千克 6.5 元，付给售货员 50 元，应找回多少元？",
            "苹果一共 3 × 6.5 = 19.5 元。\n应找回 50 - 19.5 = 30.5 元。",
            "30.5",
        ),
    ],
}

# Program-of-thought exemplars: (index into COT_EXEMPLARS[lang], program printing the answer).
POT_EXEMPLARS: dict[str, list[tuple[int, str]]] = {
    "en": [
        (2, "leah = 32\nsister = 42\neaten = 35\nprint(leah + sister - eaten)\n"),
        (7, "money = 23\nbagels = 5\nprice = 3\nprint(money - bagels * price)\n"),
    ],
    "zh": [
        (1, "books = 2 * 18  # 故事书的钱\npens = 3 * 7  # 钢笔的钱\nprint(books + pens)\n"),
        (7, "cost = 3 * 6.5  # 苹果的钱\nprint(50 - cost)  # 应找回的钱\n"),
    ],
}

ZERO_SHOT_COT_TRIGGER = {"en": "Let's think step by step.", "zh": "让我们一步一步地思考。"}

STRUCTURED_SYSTEM = {
    "en": "You are a careful math tutor. Solve the problem in exactly these four sections:\n"
    "Known facts: the quantities the problem gives.\n"
    "Goal: what the problem asks for.\n"
    "Steps: the calculation, one step per line.\n"
    "Answer: The answer is N.",
    "zh": "你是一位细心的数学老师。请严格按以下四个部分解题：\n"
    "已知条件：题目给出的数量。\n"
    "求解目标：题目要求的是什么。\n"
    "解题步骤：计算过程，每行一步。\n"
    "答案：答案是 N。",
}

POT_SYSTEM = {
    "en": "You are a careful math tutor. Solve the problem by writing a Python program that computes the answer "
    "and prints only the final number. Reply with the program in one ```python code block.",
    "zh": "你是一位细心的数学老师。请写一个 Python 程序来解题：程序算出答案，并且只打印最终的数字。"
    "把程序放在一个 ```python 代码块里回复。",
}

VALUE_SYSTEM = {
    "en": "You are a strict math teacher checking a student's partial solution.",
    "zh": "你是一位严格的数学老师，正在检查学生的部分解答。",
}
VALUE_QUESTION = {
    "en": "Question: {question}\n\nPartial solution:\n{steps}\n\nAre these steps correct so far, and do they lead "
    "to the answer? Reply with one word: sure, likely or impossible.",
    "zh": "题目：{question}\n\n部分解答：\n{steps}\n\n这些步骤到目前为止正确吗？能得出答案吗？"
    "只用一个词回答：肯定、可能或不可能。",
}
# Yao et al.'s value scale. `不可能` is listed before `可能`, so the earliest match reads it whole.
VALUE_WORDS = re.compile(r"impossible|sure|likely|不可能|肯定|可能", re.IGNORECASE)
VALUE_SCORES = {"sure": 20.0, "肯定": 20.0, "likely": 1.0, "可能": 1.0, "impossible": 0.001, "不可能": 0.001}
UNJUDGED_SCORE = VALUE_SCORES["likely"]  # a judge that answers neither way gives no evidence either way
# The start of the final line ("The answer is", "答案是"): a step holding it ends a ToT branch.
FINAL_PHRASE = {lang: final_answer_line("0", lang).rsplit("0", 1)[0].strip().lower() for lang in SYSTEM_PROMPTS}
TOT_STEP_TOKENS = 96  # one solution line
TOT_VALUE_TOKENS = 8  # one judgement word


def _dialogue(system: str, shots: Sequence[tuple[str, str]], question: str) -> Messages:
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
    return tuple(pool or load_problems(str(SAMPLE_DATA[lang]), language=lang, verbose=False))


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
        return _dialogue(system, [(p.question, p.target()) for p in shots], question)
    if strategy in ("cot", "self_consistency"):
        shots = [(q, cot_solution(lang, i)) for i, (q, _, _) in enumerate(COT_EXEMPLARS[lang])]
        return _dialogue(system, shots, question)
    if strategy == "zero_shot_cot":
        return chat_messages(f"{question.strip()}\n{ZERO_SHOT_COT_TRIGGER[lang]}", lang, system)
    if strategy == "structured_cot":
        return _dialogue(STRUCTURED_SYSTEM[lang], [], question)
    if strategy == "pot":
        shots = [(COT_EXEMPLARS[lang][i][0], f"```python\n{code}```") for i, code in POT_EXEMPLARS[lang]]
        return _dialogue(POT_SYSTEM[lang], shots, question)
    raise FastmathError(f"unknown strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")


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
    system: str | None = None  # the recipe's data.system_prompt; None = the one SFT trains with by default

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
            )
            for q, lang in questions
        ]

    def batches(self, prompts: list[str], **decoding: Any) -> Iterator[list[tuple[int, list[Generation]]]]:
        """Generate in batches as they finish, with this evaluation's seed and batch size."""
        decoding.setdefault("max_new_tokens", self.cfg.max_new_tokens)
        options = Decoding(seed=self.cfg.seed, **decoding)
        return generate_batches(self.model, self.tokenizer, prompts, options, self.cfg.batch_size)

    def generate(self, prompts: list[str], **decoding: Any) -> list[list[Generation]]:
        """Every prompt's samples, in input order."""
        results: dict[int, list[Generation]] = {}
        for batch in self.batches(prompts, **decoding):
            results.update(batch)
        return [results[i] for i in range(len(prompts))]


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


def _run_program(g: Generation) -> Solution:
    """Run the completion's program in the sandbox; its last printed line holds the answer."""
    program = extract_program(g.text)
    result = run_program(program) if program is not None else None
    printed = result.answer if result is not None else None
    extra = {"program": program, "sandbox_error": "no program" if result is None else result.error}
    return Solution(g.text, extract_answer(printed) if printed else None, g.tokens, g.finish_reason, extra)


def _pot(setup: Setup, questions: Sequence[Question]) -> Iterator[tuple[int, Solution]]:
    with ThreadPoolExecutor(SANDBOX_WORKERS) as pool:  # programs run while the next batch waits
        for batch in setup.batches(setup.prompts("pot", questions), stop=RUN_ON_STOPS):
            solutions = pool.map(_run_program, [samples[0] for _, samples in batch])
            yield from zip([i for i, _ in batch], solutions, strict=True)


@dataclass(frozen=True)
class _State:
    """A partial solution in the ToT beam: its lines, the judge's score, whether it is finished."""

    steps: tuple[str, ...]
    score: float = UNJUDGED_SCORE
    done: bool = False


def tot_budget(cfg: EvalConfig) -> int:
    """Most generations ToT makes per problem: each of `depth` rounds, at most `breadth` open
    states propose `proposals` next lines each, and every distinct proposal is judged once."""
    per_round = cfg.tot_breadth * cfg.tot_proposals
    return cfg.tot_depth * (per_round + per_round)


def _propose_prompt(setup: Setup, question: Question, state: _State) -> str:
    """The zero-shot prompt with the lines so far as the start of the answer: the model writes the next."""
    return setup.prompts("tot", [question])[0] + "".join(f"{s}\n" for s in state.steps)


def _value_prompt(setup: Setup, question: Question, state: _State) -> str:
    text, lang = question
    ask = VALUE_QUESTION[lang].format(question=text.strip(), steps="\n".join(state.steps))
    return prompt_text(setup.tokenizer, _dialogue(VALUE_SYSTEM[lang], [], ask))


def _value(judgement: str) -> float:
    m = VALUE_WORDS.search(judgement)
    return VALUE_SCORES[m[0].lower()] if m else UNJUDGED_SCORE


def _extend(state: _State, step: str, lang: str) -> _State:
    """`state` plus one proposed line; an empty proposal (the model ended its answer) finishes it."""
    step = step.strip()
    if not step:
        return replace(state, done=True)
    return _State(state.steps + (step,), done=FINAL_PHRASE[lang] in step.lower())


def _tot_group(setup: Setup, questions: dict[int, Question]) -> Iterator[tuple[int, Solution]]:
    """Beam search for a group of problems in lock-step, so each round is two batched generate calls.

    Each round: every open state in a beam (at most b; 1 in the first round) samples k next lines
    (stop at a newline), each distinct new state is judged once by the value prompt (greedy:
    sure/likely/impossible -> 20/1/0.001), and the b best states, finished ones included, are
    kept. Calls per problem <= d * (b*k + b*k) = `tot_budget`; a beam that has finished stops early.
    The answer is the best finished state's (else the best state's, with finish reason "length").
    """
    cfg = setup.cfg
    beams = {i: [_State(())] for i in questions}
    calls, tokens = dict.fromkeys(questions, 0), dict.fromkeys(questions, 0)
    for _ in range(cfg.tot_depth):
        open_states = [(i, s) for i in questions for s in beams[i] if not s.done]
        if not open_states:
            break
        proposals = setup.generate(
            [_propose_prompt(setup, questions[i], s) for i, s in open_states],
            max_new_tokens=min(cfg.max_new_tokens, TOT_STEP_TOKENS),
            stop=("\n",),
            do_sample=True,
            temperature=cfg.temperature,
            num_return_sequences=cfg.tot_proposals,
        )
        fresh: dict[int, dict[tuple[str, ...], _State]] = {i: {} for i in questions}
        for (i, state), samples in zip(open_states, proposals, strict=True):
            calls[i] += len(samples)
            tokens[i] += sum(g.tokens for g in samples)
            for g in samples:
                new = _extend(state, g.text, questions[i][1])
                fresh[i].setdefault(new.steps, new)
        judged = [(i, s) for i in questions for s in fresh[i].values()]
        values = setup.generate(
            [_value_prompt(setup, questions[i], s) for i, s in judged],
            max_new_tokens=min(cfg.max_new_tokens, TOT_VALUE_TOKENS),
            stop=("\n",),
        )
        for i in questions:
            beams[i] = [s for s in beams[i] if s.done]
        for (i, state), (g,) in zip(judged, values, strict=True):
            calls[i] += 1
            tokens[i] += g.tokens
            beams[i].append(replace(state, score=_value(g.text)))
        for i in questions:
            beams[i] = sorted(beams[i], key=lambda s: -s.score)[: cfg.tot_breadth]
    for i in questions:
        best = max(beams[i], key=lambda s: (s.done, s.score))
        completion = "\n".join(best.steps)
        extra = {"calls": calls[i], "score": best.score}
        yield i, Solution(completion, extract_answer(completion), tokens[i], "stop" if best.done else "length", extra)


def _tot(setup: Setup, questions: Sequence[Question]) -> Iterator[tuple[int, Solution]]:
    """ToT over groups of problems (the batch size, or the automatic one), each group saved as it ends."""
    group = setup.cfg.batch_size or auto_batch_size(setup.model, 1)
    for start in range(0, len(questions), group):
        yield from _tot_group(setup, {i: questions[i] for i in range(start, min(start + group, len(questions)))})


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("zero_shot", "the question alone, as SFT trains on it", _prompted("zero_shot")),
        Strategy("few_shot", "k worked solutions from the train split as earlier turns", _prompted("few_shot")),
        Strategy("cot", "8 hand-written step-by-step exemplars ending 'The answer is N.'", _prompted("cot")),
        Strategy("zero_shot_cot", "the question + 'Let's think step by step.'", _prompted("zero_shot_cot")),
        Strategy("structured_cot", "fixed sections: known facts, goal, steps, answer", _prompted("structured_cot")),
        Strategy("tot", "tree of thoughts: beam search over solution lines, judged by a value prompt", _tot),
        Strategy("self_consistency", "cot sampled k times, majority vote (maj@k)", _self_consistency),
        Strategy("pot", "program of thought: the model writes Python, a sandbox runs it", _pot),
    )
}
PROMPT_STRATEGIES = ("zero_shot", "few_shot", "cot", "zero_shot_cot", "structured_cot")
