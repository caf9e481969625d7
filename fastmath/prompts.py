"""The chat prompt a fine-tuned model is trained on, and answers to at evaluation time.

One place, so that SFT, DPO, GRPO, pair mining, evaluation and the app all ask the question the
same way: a train/test prompt mismatch silently costs accuracy.

TRL's prompt-completion path trains on everything the template appends after the answer (for
Qwen, `<|im_end|>` *and* the newline after it). `encode_example` encodes the prompt exactly as
the generator will see it, and the completion as the answer plus the end-of-turn token only, so
the loss covers precisely what the model must produce at inference.
"""

from __future__ import annotations

import re
from functools import lru_cache

MARK = "\x00FASTMATH_MARK\x00"

CJK = re.compile(r"[\u4e00-\u9fff]")

SYSTEM_PROMPTS = {
    "en": "You are a careful math tutor. Solve the problem step by step, then give the final answer "
    "on its own line as 'The answer is N.'",
    "zh": "你是一位细心的数学老师。请一步一步地解题，最后单独一行写出最终答案，格式为“答案是 N。”",
}


def detect_language(text: str) -> str:
    """'zh' when the text contains Chinese characters, else 'en'."""
    return "zh" if CJK.search(text) else "en"


def chat_messages(question: str, lang: str | None = None, system: str | None = None) -> list[dict[str, str]]:
    """System + user turns for one problem; the assistant's solution follows."""
    lang = lang or detect_language(question)
    return [
        {"role": "system", "content": system or SYSTEM_PROMPTS[lang]},
        {"role": "user", "content": question.strip()},
    ]


def prompt_text(tokenizer, messages: list[dict[str, str]]) -> str:
    """The prompt as the model sees it, ending with the assistant header."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@lru_cache(maxsize=8)
def end_of_turn(tokenizer) -> str:
    """The token the template closes an assistant turn with (`<|im_end|>` for Qwen)."""
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "x"}, {"role": "assistant", "content": MARK}], tokenize=False
    )
    tail = rendered.split(MARK, 1)[1].strip()
    return tail or tokenizer.eos_token


def encode_example(tokenizer, messages: list[dict[str, str]], completion: str) -> dict[str, list[int]]:
    """`input_ids` of prompt + completion + end-of-turn, and a mask that is 1 on the trained part."""
    prompt_ids = tokenizer(prompt_text(tokenizer, messages), add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion + end_of_turn(tokenizer), add_special_tokens=False)["input_ids"]
    return {
        "input_ids": prompt_ids + completion_ids,
        "completion_mask": [0] * len(prompt_ids) + [1] * len(completion_ids),
    }
