"""Answer math problems with a base model and an optional adapter, the solution streamed as it comes.

    python -m fastmath solve                                    # ask in a loop; newest run's adapter
    python -m fastmath solve "A farmer has 12 cows ..." --strategy cot
    python -m fastmath solve --lora outputs/<run> --max-new-tokens 256
    python -m fastmath solve --model Qwen/Qwen2.5-7B-Instruct  # the base model alone

An adapter is asked with the system prompt it was trained with (its run's data.system_prompt).
Prompt strategies stream token by token through the generation engine's `Stream`; procedure
strategies (several samples, a program to run) give their whole completion at the end. Both can
be stopped (Ctrl-C, the app's Stop button) and give up after a timeout instead of hanging.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from fastmath.errors import FastmathError
from fastmath.eval import strategies
from fastmath.eval.prompting import Setup
from fastmath.eval.strategies import RUN_ON_STOPS
from fastmath.generation import Stream
from fastmath.grading import extract_answer
from fastmath.prompts import detect_language


def solve_one(setup: Setup, question: str, strategy: str) -> dict[str, Any]:
    """One question through one strategy (no gold, so no outcome): completion, pred, tokens, ..."""
    ((_, solution),) = strategies.get(strategy).solve(setup, [(question, detect_language(question))])
    return {"completion": solution.completion, "pred": solution.pred, "tokens": solution.tokens,
            "finish_reason": solution.finish_reason, **solution.extra}  # fmt: skip


class Solution:
    """One solution being written; iterate it for the text as it arrives.

    `done` is True once the model finished on its own (not stopped, no error); `pred` is then the
    answer the grader reads, `text` the completion cut as evaluation cuts it.
    """

    def __init__(self, setup: Setup, question: str, strategy: str, timeout_s: float | None = None):
        self.record = strategies.get(strategy)  # an unknown strategy is an error naming the known ones
        if not question.strip():
            raise FastmathError("the problem is empty: type a math problem first")
        self.setup, self.question, self.strategy, self.timeout_s = setup, question.strip(), strategy, timeout_s
        self.text = ""
        self.prompt = ""  # what the model was asked, as rendered (streamed strategies)
        self.pred: str | None = None
        self.done = False
        self._halt = threading.Event()
        self._stream: Stream | None = None

    def stop(self) -> None:
        self._halt.set()
        if self._stream is not None:
            self._stream.stop()

    def __iter__(self) -> Iterator[str]:
        chunks = self._streamed() if self.record.streams else self._procedure()
        try:
            for chunk in chunks:
                self.text += chunk
                yield chunk
        finally:
            self.stop()

    def _streamed(self) -> Iterator[str]:
        setup = self.setup
        self.prompt = setup.prompts(self.record.messages, [(self.question, detect_language(self.question))])[0]
        decoding = setup.decoding(stop=RUN_ON_STOPS)
        self._stream = Stream(setup.model, setup.tokenizer, self.prompt, decoding, self.timeout_s)
        if self._halt.is_set():
            return
        yield from self._stream
        if self._stream.result is not None:
            self.text, self.done = self._stream.result.text, True
            self.pred = extract_answer(self.text)

    def _procedure(self) -> Iterator[str]:
        """Strategies that are procedures, not one prompt: run on a worker, wait for the whole answer."""
        result: dict[str, Any] = {}
        failure: list[BaseException] = []

        def work() -> None:
            try:
                result.update(solve_one(self.setup, self.question, self.strategy))
            except Exception as e:  # reported by the reader, on its own thread
                failure.append(e)

        worker = threading.Thread(target=work, name="fastmath-solve", daemon=True)
        worker.start()
        deadline = time.monotonic() + self.timeout_s if self.timeout_s is not None else float("inf")
        while worker.is_alive() and not self._halt.is_set() and time.monotonic() < deadline:
            worker.join(Stream.POLL_S)
        if failure:
            raise FastmathError(f"generation failed: {type(failure[0]).__name__}: {failure[0]}")
        if worker.is_alive():
            if self._halt.is_set():
                return
            raise FastmathError(f"no complete answer within {self.timeout_s:g} s; try fewer max new tokens")
        self.pred, self.done = result.get("pred"), True
        yield result.get("completion", "")


def answer(setup: Setup, question: str, strategy: str) -> None:
    """Print the solution as it streams, then the final answer."""
    solution = Solution(setup, question, strategy)
    for chunk in solution:
        print(chunk, end="", flush=True)
    print(f"\nanswer: {solution.pred if solution.pred is not None else '(none found)'}", flush=True)


def interactive(setup: Setup, strategy: str) -> None:
    """Ask for problems until an empty line, `quit` or end of input; Ctrl-C stops one answer."""
    print("Type a math problem (English or Chinese) and press Enter; an empty line or `quit` exits.")
    while True:
        try:
            question = input("problem> ").strip()
        except EOFError:
            print()
            return
        if question.lower() in ("", "quit", "exit"):
            return
        try:
            answer(setup, question, strategy)
        except KeyboardInterrupt:
            print("\n[stopped]", flush=True)


def main(inv) -> int:
    from fastmath.models import load_for_inference

    recipe, adapter = inv.recipe, inv.parent
    print(f"model: {recipe.model.name}" + (f" + adapter {adapter}" if adapter else " (no adapter)"), file=sys.stderr)
    model, tokenizer = load_for_inference(recipe.model, str(adapter) if adapter else None, inv.backend)
    setup = Setup(model, tokenizer, recipe.eval, system=recipe.data.system_prompt)
    (strategy,) = recipe.eval.strategies[:1]
    if inv.args.question:
        answer(setup, inv.args.question, strategy)
    else:
        interactive(setup, strategy)
    return 0
