"""QLoRA for real, on CPU: the 4-bit path every GPU recipe takes, through bitsandbytes' CPU backend.

The chain a QLoRA user runs, each stage its own `python -m fastmath` process, on both backends:
tiny SFT in 4-bit -> pairs -> DPO -> GRPO -> eval -> solve -> export merged and GGUF. Then what a
QLoRA user checks: the 4-bit first-batch loss against the 16-bit one, the saved adapter in plain
PEFT over the 4-bit base, the merge into the 16-bit base, what the summary records, a resume after
Ctrl-C; and the two backends' loss curves over a whole padded run, 16-bit and 4-bit, and hf's padded
against padding-free. The figures
(merge agreement, losses, curves) are printed: `pytest -s tests/test_qlora.py` shows them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastmath import runs

from .conftest import GSM8K_TEST, GSM8K_TRAIN, REPO, fastmath_cli
from .test_generation import single_thread  # noqa: F401 (autouse: one torch thread here too)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="`make install` installs bitsandbytes"),
]
UNSLOTH = pytest.mark.skipif(importlib.util.find_spec("unsloth") is None, reason="`make install` installs Unsloth")
BACKENDS = ["hf", pytest.param("unsloth", marks=UNSLOTH)]
ENV = {"OMP_NUM_THREADS": "1"}
NF4 = {"quant_type": "nf4", "double_quant": True, "compute_dtype": "float32"}
IDS = [[1, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120]]
NEW_TOKENS = 48
# Logits of the model as training builds it against plain PEFT + bitsandbytes over the 4-bit base: hf is
# the same computation (measured 0.0); Unsloth computes 4-bit layers with its own kernels, measured up to
# 6.0e-3 apart on logits of magnitude ~9 (7e-4 relative), so its bound is looser.
ATOL = {"hf": 1e-4, "unsloth": 1e-2}
# The tiny model's first-batch loss in 4-bit NF4 against 16-bit: measured 22.5800 vs 22.5905 (4.7e-4) on
# the quickstart's first batch, 21.9555 vs 21.9581 (1.2e-4) on GSM8K's.
LOSS_TOLERANCE = 1e-3
# A resumed run's adapter against an uninterrupted one's, relative to a tensor's largest value (as in
# tests/train/test_sft.py): the same computation, one thread each, measured 0.0.
RESUME_TOLERANCE = 1e-6
# hf padded against padding-free over 40 steps of the tiny SFT, relative: the same sums in another order.
# At the tiny recipe's batch 4 and 2e-3 measured 6.7e-7 here (and 3.7e-5 over the first 40 steps of its
# whole run); at its former batch 8 and 5e-3, 5.7e-2 over the first 40 of the whole run, 37% at step 98.
PADDING_FREE_TOLERANCE = 1e-3


def run_ok(stage: str, *args: str) -> subprocess.CompletedProcess:
    p = fastmath_cli(*args, env=ENV, timeout=600)
    assert p.returncode == 0, f"{stage}: {p.stderr[-3000:]}"
    return p


def sft_args(tiny_model: Path, out: Path, backend: str, name: str, *extra: str) -> list[str]:
    """A short tiny SFT: 16 GSM8K problems, 8 steps, every step logged."""
    batching = "padded" if backend == "unsloth" else "padding_free"  # Unsloth turns padding-free off
    return [
        "sft", "tiny-sft", f"model.backend={backend}", f"model.name={tiny_model}", f"data.train={GSM8K_TRAIN}",
        "data.limit=16", "training.max_steps=8", "training.logging_steps=1", f"training.batching={batching}",
        f"training.output_dir={out}", f"training.run_name={name}", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module", params=BACKENDS)
def chain(request, tiny_model, shared_data, tmp_path_factory):
    """tiny SFT in 4-bit -> pairs -> DPO, GRPO -> eval -> solve -> export merged (bf16) and GGUF (f16)."""
    backend = request.param
    out = tmp_path_factory.mktemp(f"qlora-{backend}") / "outputs"
    steps = {"sft": run_ok("sft", *sft_args(tiny_model, out, backend, "sft", "model.load_in_4bit=true"))}
    sft = out / "sft"
    common = [f"dpo.sft_run={sft}", f"training.output_dir={out}"]
    steps["pairs"] = run_ok(
        "pairs", "pairs", "tiny-dpo", *common, f"data.train={GSM8K_TRAIN}", "dpo.problems=2",
        "dpo.samples_per_problem=2", "eval.max_new_tokens=24",
    )  # fmt: skip
    steps["dpo"] = run_ok(
        "dpo", "dpo", "tiny-dpo", *common, "dpo.pairs=fastmath:samples/preference_data.json", "dpo.max_steps=2",
        "training.logging_steps=1", "training.run_name=dpo",
    )  # fmt: skip
    steps["grpo"] = run_ok(
        "grpo", "grpo", "tiny-grpo", f"grpo.sft_run={sft}", f"data.train={GSM8K_TRAIN}", "grpo.problems=2",
        "grpo.batch_size=2", "grpo.num_generations=2", "grpo.max_completion_length=24", "grpo.max_steps=2",
        f"training.output_dir={out}", "training.run_name=grpo",
    )  # fmt: skip
    steps["eval"] = run_ok(
        "eval", "eval", "--lora", str(sft), "--output-dir", str(out), "--dataset", str(GSM8K_TEST),
        "--strategies", "zero_shot", "--samples", "2", "--max-new-tokens", "24",
    )  # fmt: skip
    steps["solve"] = run_ok("solve", "solve", "1 + 1 = ?", "--lora", str(sft), "--max-new-tokens", "16")
    steps["merged"] = run_ok("export merged", "export", str(sft), "--format", "merged")
    steps["gguf"] = run_ok("export gguf", "export", str(sft), "--format", "gguf", "--pre-tokenizer", "qwen2")
    return backend, out, steps


def test_every_stage_ran_over_the_4bit_base_and_recorded_it(chain):
    backend, out, steps = chain
    for stage in ("sft", "dpo", "grpo"):
        summary = json.loads((out / stage / "summary.json").read_text())
        assert (summary["backend"], summary["4bit"], summary["dtype"]) == (backend, NF4, "nf4 (compute float32)"), stage
        assert summary["steps"] > 0 and summary["trained_tokens"] > 0, stage
    assert (out / "sft" / "pairs.jsonl").is_file(), steps["pairs"].stdout[-2000:]
    summary = json.loads((out / "sft" / "eval" / "test" / "summary.json").read_text())
    assert summary["zero_shot"]["backend"] == backend and summary["zero_shot"]["n"] == 2
    assert steps["solve"].stdout.rstrip().splitlines()[-1].startswith("answer: ")


def merged_tensors(folder: Path) -> set[str]:
    from fastmath.models import safetensors_header

    return {k for p in folder.glob("*.safetensors") for k in safetensors_header(p) if k != "__metadata__"}


def test_exports_are_merged_into_the_16bit_base(chain):
    """The merged export is the unquantized base plus the adapter (no quantization_config), and GGUF converts it."""
    from gguf import GGUFReader

    _, out, _ = chain
    merged = runs.export_dir(out / "sft", "merged", "bf16")
    config = json.loads((merged / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "bfloat16"
    gguf = runs.export_dir(out / "sft", "gguf", "f16") / "sft-f16.gguf"
    reader = GGUFReader(gguf)
    assert reader.get_field("general.architecture").contents() == "qwen2"
    assert len(reader.tensors) == len(merged_tensors(merged)), "every tensor of the merge"


# --- what a QLoRA user checks ------------------------------------------------------------------------


def nf4_base(tiny_model: Path):
    """The tiny model in 4-bit, as plain transformers + bitsandbytes load it (no fastmath)."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quant = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )  # fmt: skip
    return AutoModelForCausalLM.from_pretrained(
        tiny_model, quantization_config=quant, dtype=torch.float32, device_map={"": "cpu"}
    )


def test_the_adapter_loads_in_plain_peft_over_the_4bit_base_with_the_training_logits(chain, tiny_model, tmp_path):
    """The model as training builds it (the backend's 4-bit load, k-bit preparation, the adapter) against
    plain PEFT over plain bitsandbytes: the same logits."""
    from peft import PeftModel

    backend, out, _ = chain
    logits = tmp_path / "logits.pt"
    training_side = (
        "import torch\nfrom pathlib import Path\nfrom fastmath import runs\nfrom fastmath.config import load_recipe\n"
        f"from fastmath.models import activate\nactivate({backend!r})\nfrom fastmath.models import load_for_training\n"
        f"run = Path({str(out / 'sft')!r})\nrecipe = load_recipe(run / runs.RECIPE)\n"
        f"model, _ = load_for_training(recipe.model, recipe.lora, {backend!r}, adapter=str(run), "
        "gradient_checkpointing=False)\nmodel.eval()\n"
        f"with torch.no_grad():\n    torch.save(model(input_ids=torch.tensor({IDS})).logits.float(), {str(logits)!r})\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), **ENV}
    p = subprocess.run([sys.executable, "-c", training_side], env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    plain = PeftModel.from_pretrained(nf4_base(tiny_model), out / "sft").eval()
    with torch.no_grad():
        expected = plain(input_ids=torch.tensor(IDS)).logits.float()
    got = torch.load(logits)
    print(f"\n{backend} training logits vs plain PEFT over 4-bit: max diff {float((got - expected).abs().max()):.2e}")
    torch.testing.assert_close(got, expected, rtol=0, atol=ATOL[backend])
    lora_b = [p for n, p in plain.named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora_b), "a trained adapter, not the zero init"


@pytest.fixture(scope="module")
def prompts(tiny_model, shared_data) -> list[list[int]]:
    """Three GSM8K training problems, asked as fastmath's eval asks them."""
    from fastmath.config import ModelConfig
    from fastmath.data import load_problems
    from fastmath.models import load_tokenizer
    from fastmath.prompts import chat_messages, prompt_text

    tokenizer = load_tokenizer(ModelConfig(name=str(tiny_model)))
    problems = load_problems(str(GSM8K_TRAIN), limit=3, verbose=False)
    return [tokenizer(prompt_text(tokenizer, chat_messages(p.question)))["input_ids"] for p in problems]


def greedy(model, ids: list[int]) -> list[int]:
    with torch.no_grad():
        out = model.generate(
            torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=[2, 0], pad_token_id=0
        )
    return out[0, len(ids) :].tolist()


def agreement(model, reference, prompts: list[list[int]], answers: list[list[int]]) -> dict[str, float]:
    """How closely `model` follows `reference`: the share of `reference`'s greedy tokens it predicts
    the same along `reference`'s answers, and the largest logit difference there."""
    same = total = 0
    largest = 0.0
    for ids, answer in zip(prompts, answers, strict=True):
        path = torch.tensor([ids + answer])
        with torch.no_grad():
            a, b = (m(path).logits[0, len(ids) - 1 : -1].float() for m in (model, reference))
        same, total = same + int((a.argmax(-1) == b.argmax(-1)).sum()), total + len(answer)
        largest = max(largest, float((a - b).abs().max()))
    return {"same_argmax": round(same / total, 4), "max_logit_diff": round(largest, 4)}


def test_the_merge_into_the_16bit_base_is_exact_in_fp32_and_measured_in_bf16(chain, tiny_model, prompts):
    """fp32: the merge answers exactly as the adapter over the 16-bit base. bf16 (the export): measured
    against that, and against the adapter over the 4-bit base, the model QLoRA trained."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from fastmath.export import merge

    backend, out, _ = chain
    run = out / "sft"
    base16 = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    adapter16 = PeftModel.from_pretrained(base16, run).eval()
    answers = [greedy(adapter16, ids) for ids in prompts]
    assert [greedy(merge.merged_model(run, tiny_model), ids) for ids in prompts] == answers
    exported = runs.export_dir(run, "merged", "bf16")
    bf16 = AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32).eval()  # bf16 values, fp32 sums
    adapter4 = PeftModel.from_pretrained(nf4_base(tiny_model), run).eval()
    figures = {
        "bf16 export vs adapter on 16-bit base": agreement(bf16, adapter16, prompts, answers),
        "adapter on 4-bit base vs adapter on 16-bit base": agreement(adapter4, adapter16, prompts, answers),
        "bf16 export vs adapter on 4-bit base": agreement(bf16, adapter4, prompts, answers),
    }
    print(f"\n{backend} QLoRA merge, {sum(map(len, answers))} greedy tokens: {json.dumps(figures)}")
    assert figures["bf16 export vs adapter on 16-bit base"]["same_argmax"] >= 0.9


@pytest.fixture(scope="module")
def resumed(tiny_recipe, shared_data) -> tuple[Path, Path]:
    """A 4-bit SFT stopped by Ctrl-C after step 3 of 6 (checkpoints every 2) and resumed by `sft --resume`
    in a new process, and the same SFT uninterrupted: (resumed run, uninterrupted run)."""
    from fastmath.train.sft import run_sft

    from .train.interrupt import WEIGHTS, Interrupt

    settings = {
        "model.load_in_4bit": True, "data.train": str(GSM8K_TRAIN), "data.limit": 16, "training.max_steps": 6,
        "training.save_steps": 2, "training.logging_steps": 1, "training.batching": "padded",
    }  # fmt: skip
    whole = run_sft(tiny_recipe(**settings, **{"training.run_name": "whole"}), "hf")
    cut = tiny_recipe(**settings, **{"training.run_name": "cut"})
    with pytest.raises(KeyboardInterrupt):
        run_sft(cut, "hf", callbacks=(Interrupt(at=3),))
    cut_dir = Path(cut.training.output_dir) / "cut"
    assert (cut_dir / "checkpoint-2").is_dir() and not (cut_dir / WEIGHTS).exists()
    assert "from checkpoint-2" in run_ok("resume", "sft", "--resume", str(cut_dir)).stdout
    return cut_dir, whole


def test_a_qlora_sft_killed_midway_resumes_to_the_same_step(resumed):
    cut_dir, whole = resumed
    after, uninterrupted = (json.loads((d / "summary.json").read_text()) for d in resumed)
    assert after["steps"] == uninterrupted["steps"] == 6 and after["4bit"] == uninterrupted["4bit"] == NF4
    assert after["trained_tokens"] == uninterrupted["trained_tokens"]
    steps = [json.loads(line)["step"] for line in (cut_dir / runs.METRICS).read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_a_qlora_sft_killed_midway_resumes_to_the_same_adapter(resumed):
    """Both train the LoRA weights in fp32 (TRL casts a 4-bit model's to bf16, PEFT's resume upcasts them
    back: `train.trainer.adapter_in_fp32`), with bitsandbytes' 8-bit AdamW: measured equal to the bit."""
    from .train.interrupt import adapter_difference

    worst = adapter_difference(*resumed)
    print(f"\nresumed vs uninterrupted QLoRA adapter: largest difference {worst:.2e} of a tensor's largest value")
    assert worst < RESUME_TOLERANCE


# --- the backends agree over a whole run ----------------------------------------------------------------


@pytest.fixture(scope="module")
def curves(tiny_model, tmp_path_factory) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """40 steps of the quickstart's tiny SFT (its data, batch, learning rate and schedule) on each backend,
    16-bit and 4-bit, padded on all, and on hf padding-free (16-bit, the quickstart's batching):
    {precision: {side: [(step, loss)]}}. In 4-bit all take adamw_torch: the recipe's auto picks
    adamw_8bit, which Unsloth replaces."""
    out = tmp_path_factory.mktemp("curves")
    losses: dict[str, dict[str, list[tuple[int, float]]]] = {"16-bit": {}, "4-bit": {}}
    backends = ("hf", "unsloth") if importlib.util.find_spec("unsloth") else ("hf",)
    sides = [("16-bit", b, "padded", []) for b in backends] + [("16-bit", "hf", "padding_free", [])]
    sides += [("4-bit", b, "padded", ["model.load_in_4bit=true", "training.optim=adamw_torch"]) for b in backends]
    for precision, backend, batching, extra in sides:
        side = backend if batching == "padded" else f"{backend}-{batching}"
        name = f"{side}-{precision}"
        run_ok(
            f"sft {name}", "sft", "tiny-sft", f"model.backend={backend}", f"model.name={tiny_model}",
            "training.max_steps=40", f"training.batching={batching}", "model.dtype=float32",
            f"training.output_dir={out}", f"training.run_name={name}", *extra,
        )  # fmt: skip
        rows = [json.loads(line) for line in (out / name / runs.METRICS).read_text().splitlines()]
        losses[precision][side] = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    for precision, curve in losses.items():
        print(f"\n{precision} loss curves (step, {', '.join(curve)}):", *zip(*curve.values(), strict=True))
    return losses


def largest_relative_difference(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> float:
    """Over the logged steps of two loss curves (the same steps, to the last one of 40)."""
    assert [s for s, _ in a] == [s for s, _ in b] and a[-1][0] == 40
    return max(abs(y - x) / x for (_, x), (_, y) in zip(a, b, strict=True))


@UNSLOTH
@pytest.mark.parametrize("precision", ["16-bit", "4-bit"])
def test_the_backends_agree_at_every_logged_step_of_a_whole_padded_run(curves, precision):
    hf, unsloth = curves[precision]["hf"], curves[precision]["unsloth"]
    worst = largest_relative_difference(hf, unsloth)
    print(f"\n{precision}: largest relative difference {worst:.2e}")
    assert worst < 5e-3, list(zip(hf, unsloth, strict=True))


def test_padded_and_padding_free_batches_agree_at_every_logged_step_at_the_tiny_learning_rate(curves):
    """The quickstart trains padding-free on hf and padded on Unsloth: at the tiny recipe's learning rate
    the two layouts' floating-point order must not steer the run."""
    padded, padding_free = curves["16-bit"]["hf"], curves["16-bit"]["hf-padding_free"]
    worst = largest_relative_difference(padded, padding_free)
    print(f"\nhf padded vs padding-free: largest relative difference {worst:.2e}")
    assert worst < PADDING_FREE_TOLERANCE, list(zip(padded, padding_free, strict=True))


@UNSLOTH
@pytest.mark.parametrize("backend", ["hf", "unsloth"])
def test_first_batch_loss_in_4bit_is_the_16bit_loss_within_tolerance(curves, backend):
    """The same first batch, LoRA B at zero: the base's loss, 4-bit NF4 against 16-bit."""
    (step, sixteen), (_, four) = curves["16-bit"][backend][0], curves["4-bit"][backend][0]
    print(f"\n{backend} first-batch loss: 4-bit {four:.4f}, 16-bit {sixteen:.4f}, {abs(four - sixteen) / sixteen:.2e}")
    assert step == 1 and abs(four - sixteen) / sixteen < LOSS_TOLERANCE
