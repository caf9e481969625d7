"""The project's own sample data: shape, format, and arithmetic that is actually right.

Every `a op b = c` in a worked solution is re-evaluated here, and the final `#### N` (or the
preference data's final line) must be the result of the last computation, so a typo in the data fails.
"""

from __future__ import annotations

import ast
import json
import operator
import re
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).resolve().parent.parent / "data"
SAMPLE_FILES = {"sample_chinese_math.json": True, "sample_english_math.json": False}  # name: is Chinese

NUMBER = r"-?\d+(?:\.\d+)?"
CJK = re.compile(r"[\u4e00-\u9fff]")
GSM8K_FINAL = re.compile(rf"\n#### ({NUMBER})$")
ENGLISH_FINAL = re.compile(rf"\nThe answer is ({NUMBER})\.$")
CHINESE_FINAL = re.compile(rf"\n答案是 ({NUMBER})。$")
# An equation's right side is the number after "="; its left side is the run of arithmetic before it.
EQUATION = re.compile(rf"([0-9.\s+\-−×÷*/()]*)=\s*({NUMBER})")
BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def load(name: str) -> list[dict[str, Any]]:
    with open(DATA / name, encoding="utf-8") as f:
        return json.load(f)


def evaluate(node: ast.AST) -> float:
    """Evaluate + - * / over numbers only, so the data is checked without eval()."""
    if isinstance(node, ast.Expression):
        return evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        return BINARY[type(node.op)](evaluate(node.left), evaluate(node.right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -evaluate(node.operand)
    raise ValueError(f"not plain arithmetic: {ast.dump(node)}")


def checked_results(solution: str) -> list[float]:
    """Check every computation `expr = N` in the text; return the results in order."""
    results = []
    for match in EQUATION.finditer(solution):
        expr = match.group(1).strip()
        if not re.search(r"\d", expr):
            continue  # a word equation such as "路程 = 速度 × 时间"
        tree = ast.parse(expr.replace("×", "*").replace("÷", "/").replace("−", "-"), mode="eval")
        value, stated = evaluate(tree), float(match.group(2))
        assert value == pytest.approx(stated, abs=1e-9), f"{expr} is {value}, not {stated}"
        results.append(stated)
    return results


def test_equation_checker_catches_mistakes() -> None:
    assert checked_results("He pays 3 × 12 = 36 dollars, then 36 + 4 = 40.") == [36, 40]
    assert checked_results("路程 = 速度 × 时间，24 ÷ (4 - 2) = 12（只）") == [12]
    with pytest.raises(AssertionError):
        checked_results("3 × 18 = 44")


@pytest.mark.parametrize("name", SAMPLE_FILES)
def test_sample_math_files(name: str) -> None:
    rows = load(name)
    assert isinstance(rows, list) and len(rows) >= 40
    questions = [row["question"] for row in rows]
    assert len(set(questions)) == len(questions), "duplicate questions"
    for row in rows:
        assert set(row) == {"question", "answer"}
        question, answer = row["question"].strip(), row["answer"].strip()
        assert question and answer
        assert bool(CJK.search(question)) == SAMPLE_FILES[name], question
        final = GSM8K_FINAL.search(answer)
        assert final, f"no final '#### N' line: {question}"
        results = checked_results(answer[: final.start()])
        assert results, f"no computation: {question}"
        assert results[-1] == float(final.group(1)), f"the last computation is not the answer: {question}"


def test_preference_data() -> None:
    rows = load("preference_data.json")
    assert isinstance(rows, list) and len(rows) >= 16
    chinese = sum(bool(CJK.search(row["prompt"])) for row in rows)
    assert 0 < chinese < len(rows), "needs both English and Chinese records"
    prompts = [row["prompt"] for row in rows]
    assert len(set(prompts)) == len(prompts), "duplicate prompts"
    for row in rows:
        assert set(row) == {"prompt", "chosen", "rejected"}
        assert all(row[key].strip() for key in row)
        assert row["chosen"] != row["rejected"]
        final_line = CHINESE_FINAL if CJK.search(row["prompt"]) else ENGLISH_FINAL
        chosen, rejected = final_line.search(row["chosen"]), final_line.search(row["rejected"])
        assert chosen and rejected, f"wrong final-line format: {row['prompt']}"
        assert float(chosen.group(1)) != float(rejected.group(1)), "the rejected answer must be wrong"
        results = checked_results(row["chosen"][: chosen.start()])
        assert results and results[-1] == float(chosen.group(1)), row["prompt"]
