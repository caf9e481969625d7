"""Answer math problems with a base model and an optional adapter, the solution streamed as it comes.

    python -m fastmath solve                                    # ask in a loop; newest run's adapter
    python -m fastmath solve "A farmer has 12 cows ..." --strategy cot
    python -m fastmath solve --lora outputs/<run> --max-new-tokens 256
    python -m fastmath solve --model Qwen/Qwen2.5-7B-Instruct  # the base model alone

The model generates on a worker thread and the text is read back piece by piece, so the
terminal and the app's Solve page show it as it comes, can stop it (Ctrl-C, the Stop button),
and give up after a timeout instead of hanging.
"""

from __future__ import annotations

import argparse
import queue
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from fastmath import rundir
from fastmath.errors import FastmathError

# The prompt SFT trains on, so a fine-tuned adapter is asked the way it learned to answer.
DEFAULT_STRATEGY = "zero_shot"
POLL_S = 0.2  # how often a waiting reader checks for a stop or the deadline


def resolve_model(model: str | None, lora: str | None, output_dir: str | Path) -> tuple[str, Path | None]:
    """(base model, adapter run dir): `--lora` as a path or a run name, its base model unless
    `--model` says otherwise; with neither, the newest finished run that saved an adapter."""
    root = Path(output_dir)
    if lora:
        run = rundir.adapter_run(lora, root)
        base = model or rundir.read_run(run).get("base_model")
        if not base:
            raise FastmathError(f"--lora {lora}: its run.json names no base model; pass --model")
        return base, run
    if model:
        return model, None
    runs = [
        p
        for p in rundir.list_runs(root)
        if (p / "adapter_config.json").is_file() and rundir.read_run(p).get("status") == "finished"
    ]
    if not runs:
        raise FastmathError(
            f"no finished run with an adapter in {root}/: pass --model (and --lora RUN), or train one with `make sft`"
        )
    return resolve_model(None, str(runs[-1]), root)


def load_model(base: str, adapter: Path | None):
    """(model, tokenizer) for generation; an adapter run's recipe says how its base model was loaded."""
    from fastmath.config import ModelConfig, load_recipe
    from fastmath.models import load_for_inference

    trained = adapter is not None and (adapter / "recipe.yaml").is_file()
    cfg = load_recipe(adapter / "recipe.yaml").model if trained else ModelConfig()
    cfg.name = base
    return load_for_inference(cfg, str(adapter) if adapter else None)


def _cut_run_on(text: str) -> str:
    """The text before the model starts inventing a next problem, as evaluation cuts it."""
    from fastmath.strategies import RUN_ON_STOPS

    cuts = [text.find(s) for s in RUN_ON_STOPS if s in text]
    return text[: min(cuts)] if cuts else text


class _StopWhenSet:
    """A generation StoppingCriteria that ends every sequence once `event` is set."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class Solution:
    """One solution generated on a worker thread; iterate it for the text as it arrives.

    Prompt strategies stream token by token; procedure strategies (several samples, code to
    run) give their whole completion at the end. `stop()` ends the generation early; a
    deadline of `timeout_s` raises FastmathError rather than wait forever.
    """

    def __init__(
        self,
        model,
        tokenizer,
        question: str,
        strategy: str = DEFAULT_STRATEGY,
        max_new_tokens: int = 512,
        timeout_s: float | None = None,
    ):
        from fastmath.strategies import STRATEGIES

        if strategy not in STRATEGIES:
            raise FastmathError(f"unknown strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
        if not question.strip():
            raise FastmathError("the problem is empty: type a math problem first")
        self.model, self.tokenizer = model, tokenizer
        self.question, self.strategy, self.max_new_tokens = question.strip(), strategy, max_new_tokens
        self.timeout_s = timeout_s
        self.text = ""
        self.pred: str | None = None
        self.done = False  # True once the model finished on its own (not stopped, no error)
        self._halt = threading.Event()
        self._error: Exception | None = None
        self._deadline = float("inf")

    def stop(self) -> None:
        self._halt.set()

    def __iter__(self) -> Iterator[str]:
        from fastmath.grading import extract_answer
        from fastmath.strategies import PROMPT_STRATEGIES

        if self.timeout_s is not None:
            self._deadline = time.monotonic() + self.timeout_s
        streamed = self.strategy in PROMPT_STRATEGIES
        try:
            for chunk in self._stream() if streamed else self._procedure():
                self.text += chunk
                yield chunk
            if self._error is not None:
                raise FastmathError(f"generation failed: {type(self._error).__name__}: {self._error}")
            self.done = not self._halt.is_set()
            if streamed and self.done:
                self.text = _cut_run_on(self.text)
                self.pred = extract_answer(self.text)
        finally:
            self.stop()  # a reader that goes away (Ctrl-C, a Streamlit rerun) ends the generation

    def _check_deadline(self) -> None:
        if time.monotonic() > self._deadline:
            self.stop()
            raise FastmathError(
                f"no complete answer within {self.timeout_s:g} s, so generation was stopped; "
                "try fewer max new tokens or a smaller model"
            )

    def _stream(self) -> Iterator[str]:
        """Greedy decoding of the strategy's prompt, read back through a TextIteratorStreamer."""
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        from fastmath.generation import greedy_kwargs, stop_token_ids
        from fastmath.prompts import detect_language
        from fastmath.strategies import RUN_ON_STOPS, build_messages
        from fastmath.templates import prompt_text

        prompt = prompt_text(
            self.tokenizer, build_messages(self.strategy, self.question, detect_language(self.question))
        )
        inputs = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(self.model.device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=POLL_S)

        def work() -> None:
            try:
                self.model.generate(  # decoded as `generation.generate` decodes for evaluation
                    **inputs,
                    **greedy_kwargs(stop_token_ids(self.model, self.tokenizer), self.tokenizer.pad_token_id),
                    streamer=streamer,
                    max_new_tokens=self.max_new_tokens,
                    stop_strings=list(RUN_ON_STOPS),
                    tokenizer=self.tokenizer,
                    stopping_criteria=StoppingCriteriaList([_StopWhenSet(self._halt)]),
                )
            except Exception as e:  # reported by the reader, on its own thread
                self._error = e
                streamer.end()

        worker = threading.Thread(target=work, name="fastmath-solve", daemon=True)
        worker.start()
        while True:
            try:
                chunk = next(streamer)
            except StopIteration:
                # generate returns just after ending the stream; exiting under its live thread aborts
                worker.join()
                return
            except queue.Empty:
                chunk = ""
            self._check_deadline()
            if chunk:
                yield chunk

    def _procedure(self) -> Iterator[str]:
        """Strategies that are procedures, not one prompt: run `evaluate.solve_one`, wait for it."""
        from fastmath.config import EvalConfig
        from fastmath.evaluate import solve_one

        result: dict = {}

        def work() -> None:
            try:
                cfg = EvalConfig(max_new_tokens=self.max_new_tokens)
                result.update(solve_one(self.model, self.tokenizer, self.question, self.strategy, cfg))
            except Exception as e:  # reported by the reader, on its own thread
                self._error = e

        worker = threading.Thread(target=work, name="fastmath-solve", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(POLL_S)
            if self._halt.is_set():
                return
            self._check_deadline()
        self.pred = result.get("pred")
        yield result.get("completion", "")


def answer(model, tokenizer, question: str, args: argparse.Namespace) -> None:
    """Print the solution as it streams, then the final answer."""
    solution = Solution(model, tokenizer, question, args.strategy, args.max_new_tokens)
    for chunk in solution:
        print(chunk, end="", flush=True)
    print(f"\nanswer: {solution.pred if solution.pred is not None else '(none found)'}", flush=True)


def interactive(model, tokenizer, args: argparse.Namespace) -> None:
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
            answer(model, tokenizer, question, args)
        except KeyboardInterrupt:
            print("\n[stopped]", flush=True)


def main(argv: list[str]) -> int:
    from fastmath.strategies import STRATEGIES

    parser = argparse.ArgumentParser(prog="python -m fastmath solve", description=__doc__.split("\n")[0])
    parser.add_argument("question", nargs="?", help="answer this one problem and exit (default: ask in a loop)")
    parser.add_argument("--model", help="base model, hub id or local dir (default: the adapter run's base model)")
    parser.add_argument(
        "--lora",
        metavar="RUN",
        help="adapter: a run directory, or a run name in --output-dir (default: the newest finished run with one)",
    )
    parser.add_argument("--strategy", default=DEFAULT_STRATEGY, choices=list(STRATEGIES), help="prompt strategy")
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--output-dir", default="outputs", help="where runs live (default: outputs)")
    args = parser.parse_args(argv)
    base, adapter = resolve_model(args.model, args.lora, args.output_dir)
    print(f"model: {base}" + (f" + adapter {adapter}" if adapter else " (no adapter)"), file=sys.stderr)
    model, tokenizer = load_model(base, adapter)
    if args.question:
        answer(model, tokenizer, args.question, args)
    else:
        interactive(model, tokenizer, args)
    return 0
