"""The batched engine on a real fine-tuned model: batching changes nothing but speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from fastmath.data import load_problems
from fastmath.errors import FastmathError
from fastmath.generation import Decoding, Stream, generate, generate_batches
from fastmath.grading import extract_answer
from fastmath.prompts import chat_messages, prompt_text

from .conftest import GSM8K_TRAIN, REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """The tiny model gains nothing from threads, and on a shared machine they contend: ToT ran 40x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def overfit_model(overfit_run):
    """The adapter that memorised 16 GSM8K train problems: greedy answers are long and meaningful."""
    from fastmath import runs
    from fastmath.models import load_for_inference

    return load_for_inference(runs.model_settings(overfit_run), str(overfit_run), "hf")


@pytest.fixture(scope="module")
def problems(shared_data):
    return load_problems(str(GSM8K_TRAIN), limit=6, verbose=False)


@pytest.fixture(scope="module")
def prompts(overfit_model, problems):
    _, tokenizer = overfit_model
    return [prompt_text(tokenizer, chat_messages(p.question)) for p in problems]


@pytest.fixture(scope="module")
def one_at_a_time(overfit_model, prompts):
    model, tokenizer = overfit_model
    return generate(model, tokenizer, prompts, Decoding(max_new_tokens=200), batch_size=1)


def test_batched_greedy_equals_one_at_a_time(overfit_model, prompts, problems, one_at_a_time):
    model, tokenizer = overfit_model
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    assert len(set(lengths)) == len(lengths) and lengths != sorted(lengths, reverse=True), (
        "mixed prompt lengths, not already in the engine's longest-first order: padding and re-ordering both matter"
    )
    batched = generate(model, tokenizer, prompts, Decoding(max_new_tokens=200), batch_size=4)
    assert batched == one_at_a_time
    right = sum(extract_answer(g[0].text) == p.gold for g, p in zip(batched, problems, strict=True))
    assert right >= 4, "the memorised answers come back, in the order the prompts were given"
    assert all(g[0].finish_reason == "stop" and 0 < g[0].tokens < 200 for g in batched)


def test_one_at_a_time_is_plain_generate(overfit_model, prompts, one_at_a_time):
    """The reference itself: no padding, no engine, what `model.generate` gives alone."""
    model, tokenizer = overfit_model
    inputs = tokenizer(prompts[0], return_tensors="pt", add_special_tokens=False)
    out = model.generate(**inputs, max_new_tokens=200, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1] :]
    assert tokenizer.decode(new, skip_special_tokens=True) == one_at_a_time[0][0].text
    assert len(new) == one_at_a_time[0][0].tokens, "the end-of-turn token is counted, nothing after it"


def test_stop_strings_end_generation_and_are_cut(overfit_model, prompts, one_at_a_time):
    model, tokenizer = overfit_model
    stopped = generate(model, tokenizer, prompts, Decoding(max_new_tokens=200, stop=("\n",)), batch_size=3)
    for (full,), (cut,) in zip(one_at_a_time, stopped, strict=True):
        assert cut.text == full.text.split("\n")[0] and cut.finish_reason == "stop"
        assert cut.tokens < full.tokens


def test_max_new_tokens_ends_with_finish_reason_length(overfit_model, prompts):
    model, tokenizer = overfit_model
    short = generate(model, tokenizer, prompts[:3], Decoding(max_new_tokens=5))
    assert [(g.tokens, g.finish_reason) for (g,) in short] == [(5, "length")] * 3


def test_sampling_is_seeded_per_prompt_whatever_the_batch(overfit_model, prompts):
    model, tokenizer = overfit_model
    options = dict(max_new_tokens=24, do_sample=True, temperature=1.5, num_return_sequences=3)
    first = generate(model, tokenizer, prompts[:4], Decoding(seed=7, **options), batch_size=4)
    assert [len(samples) for samples in first] == [3] * 4
    assert any(len({g.text for g in samples}) > 1 for samples in first), "the samples of a prompt differ"
    assert generate(model, tokenizer, prompts[:4], Decoding(seed=7, **options), batch_size=4) == first
    assert generate(model, tokenizer, prompts[:4], Decoding(seed=7, **options), batch_size=1) == first, (
        "batch-invariant"
    )
    assert generate(model, tokenizer, prompts[:4], Decoding(seed=8, **options), batch_size=4) != first


class LimitedMemory:
    """The real model on a device that holds at most `rows` sequences: more raise CUDA's out-of-memory error."""

    def __init__(self, model, rows: int):
        self.model, self.rows, self.refused = model, rows, 0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def generate(self, input_ids, **kwargs):
        if input_ids.shape[0] > self.rows:
            self.refused += 1
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.model.generate(input_ids=input_ids, **kwargs)


def test_out_of_memory_halves_the_batch_instead_of_dying(overfit_model, prompts, capsys):
    model, tokenizer = overfit_model
    small = LimitedMemory(model, rows=2)
    decoding = Decoding(max_new_tokens=8)
    reference = generate(model, tokenizer, prompts, decoding)
    batches = list(generate_batches(small, tokenizer, prompts, decoding, batch_size=8))
    assert small.refused == 2 and [len(b) for b in batches] == [2, 2, 2]
    assert dict(pair for b in batches for pair in b) == dict(enumerate(reference))
    assert "retrying with 4" in capsys.readouterr().err
    with pytest.raises(FastmathError, match="out of GPU memory generating one prompt"):
        list(generate_batches(LimitedMemory(model, rows=0), tokenizer, prompts[:1], decoding, batch_size=1))


def test_a_stream_yields_the_text_as_it_comes_and_ends_as_a_batch_would(overfit_model, prompts, one_at_a_time):
    model, tokenizer = overfit_model
    stream = Stream(model, tokenizer, prompts[0], Decoding(max_new_tokens=200))
    chunks = list(stream)
    assert len(chunks) >= 2 and "".join(chunks).startswith(one_at_a_time[0][0].text[:20])
    assert stream.result == one_at_a_time[0][0], "the same Generation as the batched engine's"
    stopped = Stream(model, tokenizer, prompts[0], Decoding(max_new_tokens=200))
    for _ in stopped:
        stopped.stop()
    assert stopped.result is None, "a stopped stream has no finished result"
    with pytest.raises(FastmathError, match="no complete answer within"):
        list(Stream(model, tokenizer, prompts[0], Decoding(max_new_tokens=200), timeout_s=0.0))


def test_throughput_bench_runs_both_sides_and_reports_the_ratio(shared_data, tmp_path):
    """`bench/eval_throughput.py` end to end on a few problems (the figures themselves are the bench's job)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "bench/eval_throughput.py", "--problems", "3", "--max-new-tokens", "6"]
    p = subprocess.run([*cmd, "--results-dir", str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    (path,) = tmp_path.glob("eval_throughput-*.json")
    result = json.loads(path.read_text())
    sides = result["sides"]
    assert set(sides) == {"batched", "one_at_a_time"} and result["identical_answers"] == "3/3"
    assert result["speedup"] == round(sides["batched"]["problems_per_s"] / sides["one_at_a_time"]["problems_per_s"], 2)
    assert all(s["tokens_per_problem"] == 6 and s["projected_full_test_s"] > 0 for s in sides.values())
    assert (
        result["device"]["kind"] == "cpu"
        and result["versions"]["transformers"]
        and "batched / one-at-a-time" in p.stdout
    )
