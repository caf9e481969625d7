"""The chat prompt a fine-tuned model is trained on, and answers to at evaluation time.

One place, so that SFT, DPO, pair mining, evaluation and the app all ask the question the
same way: a train/test prompt mismatch silently costs accuracy.
"""

from __future__ import annotations

import re

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
