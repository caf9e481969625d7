"""The generation engine: every answer fastmath generates goes through here, batched or streamed.

Batched: many prompts through `model.generate` at once, with the same answers as one at a time.

Prompts are sorted by length (longest first, so a batch that runs out of memory does so at the
start) and left-padded, so every row's last prompt token sits at the same position and the KV
cache grows in lock-step; `generate` derives position ids from the attention mask, so padding
changes neither positions nor attention. A row stops at any end-of-turn token (the model's EOS ids
plus the chat template's own, e.g. `<|im_end|>`) or stop string, and the stop string is cut from
the text returned.

Decoding is greedy by default, with the decoding options of the model's `generation_config`
switched off (Qwen-Instruct ships `repetition_penalty=1.05`), so a score measures the model, not
its chat defaults. Sampling (self-consistency, ToT) draws each row from its own random generator,
seeded from (seed, prompt, sample index), by the Gumbel-max trick: a prompt gets the same samples
whatever else shares its batch. Results then stay identical across batch sizes, out-of-memory
back-offs and resumed evaluations, which one global RNG would not give.

Batch size: given, or found automatically: start high on CUDA and halve on out-of-memory (for a
given size too) instead of dying; on CPU a fixed moderate size.

Streamed (`Stream`): one prompt, decoded exactly as above, its text read back piece by piece on
the caller's thread while `generate` runs on a worker, so the terminal and the app show it as it
comes, can stop it, and give up after a deadline instead of hanging. Its final text is cut by the
same rule as a batched one.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteriaList,
    TemperatureLogitsWarper,
    TextIteratorStreamer,
    TopPLogitsWarper,
)

from fastmath.errors import FastmathError
from fastmath.log import log
from fastmath.prompts import end_of_turn

# Rows (prompts x samples) in a first automatic batch: CUDA starts high and halves on OOM.
# vLLM batches continuously: its rows per call only set how often results are saved.
AUTO_ROWS = {"cuda": 256, "cpu": 16, "vllm": 512}


@dataclass
class Generation:
    text: str  # the completion, stop string cut off, special tokens removed
    tokens: int  # tokens the model generated (its end-of-turn token included, padding not)
    finish_reason: str  # "stop": ended its turn or hit a stop string; "length": ran into max_new_tokens


@dataclass(frozen=True)
class Decoding:
    """How to decode: the options of `generate` other than batching and progress."""

    max_new_tokens: int = 512
    stop: tuple[str, ...] = ()
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    num_return_sequences: int = 1
    seed: int = 0


class SeededSampler(LogitsProcessor):
    """Sampling with one random generator per row: Gumbel-max over temperature/top-p scores.

    `argmax(scores + Gumbel noise)` is an exact sample from `softmax(scores)`, and greedy decoding
    takes that argmax. Each row's noise comes from its own generator, so a row's sample does not
    depend on which other rows share the batch.
    """

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float):
        if temperature <= 0:
            raise FastmathError(f"sampling temperature must be > 0, got {temperature}; use greedy decoding instead")
        self.seeds = list(seeds)
        self.warpers = LogitsProcessorList()
        if temperature != 1.0:
            self.warpers.append(TemperatureLogitsWarper(temperature))
        if top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p))
        self.generators: list[torch.Generator] | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.generators is None:
            self.generators = [torch.Generator(device=scores.device).manual_seed(s) for s in self.seeds]
        scores = self.warpers(input_ids, scores)
        vocab, device = scores.shape[-1], scores.device
        uniform = torch.stack([torch.rand(vocab, generator=g, device=device) for g in self.generators])
        return scores - torch.log(-torch.log(uniform))


def row_seed(seed: int, prompt: str, sample: int) -> int:
    """A 63-bit seed for one sample of one prompt, the same in every run and on every machine."""
    digest = hashlib.blake2b(f"{seed}\x00{sample}\x00{prompt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def stop_token_ids(model, tokenizer) -> list[int]:
    """Every token that ends a turn: the model's EOS ids, the tokenizer's, the chat template's."""
    configured = model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured])
    ids.add(tokenizer.eos_token_id)
    eot = tokenizer.encode(end_of_turn(tokenizer), add_special_tokens=False)
    if len(eot) == 1:
        ids.add(eot[0])
    return sorted(i for i in ids if i is not None)


def greedy_kwargs(eos: list[int], pad_token_id: int) -> dict[str, Any]:
    """`model.generate` arguments for plain greedy decoding to the end of the turn.

    Transformers fills unset options from the model's generation_config (Qwen-Instruct ships
    repetition_penalty=1.05), so they are switched off here: a score measures the model.
    """
    return {
        "do_sample": False,
        "num_beams": 1,
        "repetition_penalty": 1.0,
        "no_repeat_ngram_size": 0,
        "eos_token_id": eos,
        "pad_token_id": pad_token_id,
    }


def _is_vllm(model) -> bool:
    return type(model).__name__ == "VllmModel"  # fastmath.vllm_engine's, without importing vLLM here


def auto_batch_size(model, num_return_sequences: int) -> int:
    """Prompts per batch when none is set: `AUTO_ROWS` rows for the model's engine and device type."""
    rows = AUTO_ROWS["vllm" if _is_vllm(model) else "cuda" if model.device.type == "cuda" else "cpu"]
    return max(1, rows // num_return_sequences)


def _finish(ids: list[int], terminators: set[int], stop: Sequence[str], tokenizer) -> Generation:
    """One row's generated ids -> text, token count and why it ended."""
    end = next((i for i, t in enumerate(ids) if t in terminators), len(ids))
    text = tokenizer.decode(ids[:end], skip_special_tokens=True)
    cuts = [text.find(s) for s in stop if s in text]
    if cuts:  # stopped on a stop string: what follows it is padding, not generated
        return Generation(text[: min(cuts)], end, "stop")
    if end < len(ids):
        return Generation(text, end + 1, "stop")
    return Generation(text, end, "length")


def _generate_kwargs(model, tokenizer, prompts: list[str], decoding: Decoding) -> dict[str, Any]:
    """`model.generate` arguments for left-padded `prompts`, each repeated for its samples."""
    n = decoding.num_return_sequences
    batch = tokenizer(prompts, add_special_tokens=False, padding=True, padding_side="left", return_tensors="pt").to(
        model.device
    )
    processors = LogitsProcessorList()
    if decoding.do_sample:
        seeds = [row_seed(decoding.seed, p, j) for p in prompts for j in range(n)]
        processors.append(SeededSampler(seeds, decoding.temperature, decoding.top_p))
    return {
        "input_ids": batch["input_ids"].repeat_interleave(n, dim=0),
        "attention_mask": batch["attention_mask"].repeat_interleave(n, dim=0),
        # sampling, when asked for, is SeededSampler's Gumbel-max
        **greedy_kwargs(stop_token_ids(model, tokenizer), tokenizer.pad_token_id),
        "max_new_tokens": decoding.max_new_tokens,
        "stop_strings": list(decoding.stop) or None,
        "tokenizer": tokenizer,
        "logits_processor": processors,
    }


def _finish_rows(model, tokenizer, out: torch.Tensor, prompt_length: int, decoding: Decoding) -> list[Generation]:
    terminators = {*stop_token_ids(model, tokenizer), tokenizer.pad_token_id}
    return [_finish(r, terminators, decoding.stop, tokenizer) for r in out[:, prompt_length:].tolist()]


def _generate_batch(model, tokenizer, prompts: list[str], decoding: Decoding) -> list[list[Generation]]:
    """One left-padded batch through `model.generate`; a prompt's samples are adjacent rows."""
    n = decoding.num_return_sequences
    kwargs = _generate_kwargs(model, tokenizer, prompts, decoding)
    done = _finish_rows(model, tokenizer, model.generate(**kwargs), kwargs["input_ids"].shape[1], decoding)
    return [done[i * n : (i + 1) * n] for i in range(len(prompts))]


def _back_off(size: int, decoding: Decoding) -> int:
    """Half the batch after an out-of-memory error; a single prompt that does not fit is an error."""
    if size == 1:
        raise FastmathError(
            f"out of GPU memory generating one prompt with max_new_tokens={decoding.max_new_tokens}: "
            "lower --max-new-tokens, or load the model in 4-bit (model.load_in_4bit=true)"
        )
    torch.cuda.empty_cache()
    log.warning(f"out of memory at batch size {size}; retrying with {size // 2}")
    return size // 2


def generate_batches(
    model, tokenizer, prompts: list[str], decoding: Decoding, batch_size: int | None = None
) -> Iterator[list[tuple[int, list[Generation]]]]:
    """Yield each batch as it finishes: (prompt index, its samples) pairs, longest prompts first.

    For callers that save work as it completes (a resumable evaluation); `generate` collects it.
    """
    if not prompts:
        return
    lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    size = batch_size or auto_batch_size(model, decoding.num_return_sequences)
    if _is_vllm(model):
        from fastmath import vllm_engine

        yield from vllm_engine.batches(model, tokenizer, prompts, decoding, order, size)
        return
    start = 0
    while start < len(order):
        chunk = order[start : start + size]
        try:
            result = _generate_batch(model, tokenizer, [prompts[i] for i in chunk], decoding)
        except torch.OutOfMemoryError:
            result = None  # handled outside the except block, so the failed batch's tensors are freed
        if result is None:
            size = _back_off(size, decoding)
            continue
        yield list(zip(chunk, result, strict=True))
        start += len(chunk)


def generate(
    model, tokenizer, prompts: list[str], decoding: Decoding, batch_size: int | None = None, progress: bool = False
) -> list[list[Generation]]:
    """Completions of rendered prompts (`prompts.prompt_text`): `num_return_sequences` per prompt, in input order."""
    from tqdm.auto import tqdm

    results: dict[int, list[Generation]] = {}
    with tqdm(total=len(prompts), unit="problem", disable=not progress, dynamic_ncols=True) as bar:
        for batch in generate_batches(model, tokenizer, prompts, decoding, batch_size):
            results.update(batch)
            bar.update(len(batch))
    return [results[i] for i in range(len(prompts))]


class _StopWhenSet:
    """A generation StoppingCriteria that ends every sequence once `event` is set."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class Stream:
    """One prompt's completion generated on a worker thread; iterate it for the text as it arrives.

    `stop()` ends the generation early (a reader that goes away stops it too); past `timeout_s` the
    reader gets a FastmathError instead of waiting forever. Once iteration ends, `result` is the
    Generation a batched call would have returned (None when stopped or failed).
    """

    POLL_S = 0.2  # how often a waiting reader checks for a stop or the deadline

    def __init__(self, model, tokenizer, prompt: str, decoding: Decoding, timeout_s: float | None = None):
        if decoding.num_return_sequences != 1:
            raise FastmathError("a stream is one sample: use num_return_sequences=1")
        self.model, self.tokenizer, self.prompt, self.decoding = model, tokenizer, prompt, decoding
        self.timeout_s = timeout_s
        self.result: Generation | None = None
        self.halted = threading.Event()

    def stop(self) -> None:
        self.halted.set()

    def __iter__(self) -> Iterator[str]:
        deadline = time.monotonic() + self.timeout_s if self.timeout_s is not None else float("inf")
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=self.POLL_S)
        kwargs = _generate_kwargs(self.model, self.tokenizer, [self.prompt], self.decoding)
        failure: list[BaseException] = []

        def work() -> None:
            try:
                out = self.model.generate(
                    **kwargs, streamer=streamer, stopping_criteria=StoppingCriteriaList([_StopWhenSet(self.halted)])
                )
                if not self.halted.is_set():
                    (self.result,) = _finish_rows(
                        self.model, self.tokenizer, out, kwargs["input_ids"].shape[1], self.decoding
                    )
            except Exception as e:  # reported by the reader, on its own thread
                failure.append(e)
                streamer.end()

        worker = threading.Thread(target=work, name="fastmath-stream", daemon=True)
        worker.start()
        ended = False
        try:
            while True:
                try:
                    chunk = next(streamer)
                except StopIteration:
                    ended = True
                    break
                except queue.Empty:
                    chunk = ""
                if time.monotonic() > deadline:
                    raise FastmathError(
                        f"no complete answer within {self.timeout_s:g} s, so generation was stopped; "
                        "try fewer max new tokens or a smaller model"
                    )
                if chunk:
                    yield chunk
        finally:
            if not ended:  # a reader that goes away (Ctrl-C, a Streamlit rerun, the deadline) ends the generation
                self.stop()
            worker.join()  # exiting under generate's live thread aborts the interpreter
        if failure:
            raise FastmathError(f"generation failed: {type(failure[0]).__name__}: {failure[0]}")
