"""The bench scripts on the tiny model, on CPU: they run as real processes and write the figures they promise.

No timing is asserted: CPU figures are smoke tests. What is asserted is what must hold anywhere:
padding-free batches carry no padding, and where both sides compute the same math, the first
losses agree (loss parity).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import common
from fastmath import vllm_engine

from .conftest import GSM8K_TEST, GSM8K_TRAIN, REPO

pytestmark = pytest.mark.slow  # every bench script trains or generates in a real process

SMALL = ["--problems", "16", "--steps", "3", "--batch-size", "4", "--warmup-steps", "1"]


def bench(script: str, *args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """`python bench/<script> ...` from the repository root, results and docs written under tmp_path."""
    cmd = [sys.executable, f"bench/{script}", *args, "--results-dir", str(tmp_path / "results")]
    cmd += ["--docs", str(tmp_path / "benchmarks.md")]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": ""}  # CPU, even on a GPU box
    env.pop("PYTHONPATH", None)  # the scripts must find the repository on their own
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


@pytest.fixture(scope="module")
def compared(tiny_model, shared_data, tmp_path_factory) -> tuple[dict, Path]:
    """One gpu_compare run of the SFT part, into a results file that already holds an eval part."""
    tmp = tmp_path_factory.mktemp("gpu_compare")
    out = tmp / "results" / "gpu_compare-cpu-tiny-qwen2.json"
    out.parent.mkdir()
    out.write_text(json.dumps({"bench": "gpu_compare", "parts": {"eval": {"date": "earlier", "speedup": 20.0}}}))
    bench(
        "gpu_compare.py", "--model", str(tiny_model), "--parts", "sft", "--work-dir", str(tmp / "work"), *SMALL,
        tmp_path=tmp,
    )  # fmt: skip
    return json.loads(out.read_text()), tmp


def test_sft_throughput_padded_vs_padding_free(tiny_model, shared_data, tmp_path):
    p = bench(
        "sft_throughput.py", "--model", str(tiny_model), "--modes", "padded,padding_free", *SMALL, tmp_path=tmp_path
    )
    result = json.loads((tmp_path / "results" / "sft_throughput-cpu.json").read_text())
    assert result["command"].startswith("python bench/sft_throughput.py --model")
    assert result["device"]["kind"] == "cpu" and result["versions"]["trl"] == "1.14.2" and result["date"]
    padded, free = result["modes"]["padded"], result["modes"]["padding_free"]
    assert padded["pad_fraction"] > 0 and free["pad_fraction"] == 0
    assert padded["tokens"] == free["tokens"] > 0, "same problems and steps: the same non-pad tokens"
    for mode in (padded, free):
        assert mode["tokens_per_s"] > 0 and mode["peak_memory_gb"] > 0 and mode["steps"] == 3
        assert mode["tokens_per_s_basis"].startswith("steps 2-3")
    assert free["first_loss"] == pytest.approx(padded["first_loss"], rel=1e-4), "same first batch, same loss"
    assert result["ratios"]["padding_free/padded"]["tokens_per_s"] > 0
    assert "padding_free/padded: tokens/s" in p.stdout
    docs = (tmp_path / "benchmarks.md").read_text()
    assert "## SFT batching" in docs and "| padding_free |" in docs


def test_gpu_compare_sft_parity_and_honest_notes(compared):
    result, _ = compared
    assert result["command"].startswith("python bench/gpu_compare.py") and result["versions"]["torch"]
    sft = result["parts"]["sft"]
    fast, baseline = sft["fast"], sft["baseline"]
    # No CUDA: the fast side is Unsloth's CPU backend, which turns the recipe's padding-free off, and says so.
    assert (fast["backend"], fast["batching"], fast["batching_seen"]) == ("unsloth", "padding_free", "padded")
    assert fast["changed_by_backend"]["padding_free"] == [True, False]
    assert any("Unsloth's CPU backend" in n for n in sft["notes"])
    assert (baseline["backend"], baseline["batching"], baseline["gradient_checkpointing"]) == ("hf", "padded", True)
    assert baseline["batching_seen"] == "padded" and fast["tokens"] == baseline["tokens"]
    assert sft["speedup"] > 0 and sft["memory_ratio"] > 0
    assert sft["parity"]["key"] == "loss" and sft["parity"]["relative_diff"] < 1e-4 and sft["parity"]["same_tokens"]
    assert all(t["applies"] is False and t["met"] is None for t in sft["targets"])


def test_gpu_compare_merges_parts_and_marks_h100_pending(compared):
    result, tmp = compared
    assert list(result["parts"]) == ["eval", "sft"], "a part run earlier is kept, the new one added"
    assert result["parts"]["eval"]["date"] == "earlier"
    docs = (tmp / "benchmarks.md").read_text()
    assert "H100, Qwen2.5-7B: pending" in docs and "n/a: not 7B + Unsloth on a GPU" in docs
    assert "bash ../shared/device/gpu-bundle.sh .gpu-site" in docs
    assert "python bench/gpu_compare.py --shape 7b --parts sft,dpo,eval" in docs


def test_dpo_and_eval_workers_on_the_sft_adapter(compared, tiny_model, shared_data):
    """The DPO and eval sides, in this process (a fresh process each costs seconds of imports)."""
    from bench import gpu_compare

    _, tmp = compared
    (sft_run,) = (tmp / "work" / "runs").glob("*/sft-fast")
    pairs = gpu_compare.write_pairs(GSM8K_TRAIN, 8, tmp / "pairs.jsonl")
    overrides = {
        "model.name": str(tiny_model),
        "model.load_in_4bit": False,
        "dpo.sft_run": str(sft_run),
        "dpo.pairs": str(pairs),
        "dpo.batch_size": 2,
        "dpo.max_steps": 2,
        "training.logging_steps": 1,
        "training.report_to": "none",
        "training.output_dir": str(tmp / "dpo"),
    }
    spec = {"stage": "dpo", "recipe": str(common.DPO_RECIPE), "overrides": overrides, "warmup_steps": 1}
    dpo = common.train_task({**spec, "backend": "hf"})
    assert dpo["backend"] == "hf" and dpo["steps"] == 2 and dpo["tokens_per_s"] > 0
    assert dpo["first_logs"]["loss"] == pytest.approx(0.6931, abs=1e-3), "policy == reference at the first step"
    assert dpo["first_logs"]["logps/chosen"] < 0

    spec = {
        "recipe": str(common.SFT_RECIPE),
        "overrides": {"model.name": str(tiny_model), "model.load_in_4bit": False},
        "adapter": str(sft_run),
        "data": str(GSM8K_TEST),
        "problems": 3,
        "max_new_tokens": 6,
        "backend": "hf",
    }
    batched = gpu_compare.batched_eval_task({**spec, "batch_size": None})
    sequential = gpu_compare.sequential_eval_task(spec)
    for side in (batched, sequential):
        assert side["problems"] == 3 and side["problems_per_s"] > 0 and 0 < side["tokens_per_problem"] <= 6
        assert side["projected_full_test_s"] == pytest.approx(common.GSM8K_TEST_SIZE / side["problems_per_s"], rel=0.01)


def test_random_model_shapes_are_qwen25s_and_built_once(tmp_path, monkeypatch):
    """The 7B, 1.5B and 0.5B configs give Qwen2.5's published parameter counts; a build is reused."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    published = {"7b": 7_615_616_512, "1.5b": 1_543_714_304, "0.5b": 494_032_768}
    for shape, count in published.items():
        with torch.device("meta"):
            model = Qwen2ForCausalLM(Qwen2Config(**common.QWEN25, **common.SHAPES[shape]))
        assert sum(p.numel() for p in model.parameters()) == count

    # the same build path, at a CPU-sized shape
    mini = dict(common.SHAPES["1.5b"], hidden_size=64, intermediate_size=96, num_hidden_layers=1, vocab_size=4096)
    monkeypatch.setitem(common.SHAPES, "mini", {**mini, "num_attention_heads": 4, "num_key_value_heads": 2})
    record = common.build_task({"shape": "mini", "path": str(tmp_path / "mini")})
    with torch.device("meta"):
        model = Qwen2ForCausalLM(Qwen2Config(**common.QWEN25, **common.SHAPES["mini"]))
    assert record["parameters"] == sum(p.numel() for p in model.parameters())  # tied: stored once
    assert record["dtype_on_disk"] == "bfloat16" and record["config"]["vocab_size"] == 4096
    monkeypatch.setattr(common, "run_worker", lambda *a: pytest.fail("a finished build must be reused"))
    assert common.ensure_model("mini", tmp_path / "mini") == record


def test_backend_throughput_hf_vs_unsloth_16bit_vs_4bit_side_by_side(tiny_model, shared_data, tmp_path):
    p = bench("backend_throughput.py", "--model", str(tiny_model), *SMALL, tmp_path=tmp_path)
    result = json.loads((tmp_path / "results" / "backend_throughput-cpu.json").read_text())
    sides = result["backends"]
    assert list(sides) == ["hf", "unsloth", "hf-4bit", "unsloth-4bit"]
    for name, side in sides.items():
        assert side["backend"] == name.removesuffix("-4bit") and side["load_in_4bit"] == name.endswith("-4bit")
        assert side["batching_seen"] == "padded" and side["tokens"] == sides["hf"]["tokens"]
    assert sides["hf"]["dtype"] == sides["unsloth"]["dtype"] == "float32"
    for name in ("unsloth/hf", "unsloth-4bit/hf-4bit", "hf-4bit/hf"):  # the same first batch: the same loss
        ratios = result["ratios"][name]
        assert ratios["first_loss_relative_diff"] < 1e-3, name
        assert ratios["tokens_per_s"] > 0 and ratios["peak_memory"] > 0 and f"{name}: tokens/s" in p.stdout


def test_gpu_smoke_script_runs_the_user_path(tmp_path):
    """bench/gpu_smoke.sh on a CPU with the tiny shape: every `make` step of the GPU script, for real."""
    env = {**os.environ, "SHAPE": "tiny", "COMPARE": "none", "EVAL_SAMPLES": "8", "OUT": str(tmp_path / "out"),
           "WORK": str(tmp_path / "work"), "OMP_NUM_THREADS": "1"}  # fmt: skip
    p = subprocess.run(["bash", "bench/gpu_smoke.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=900)  # fmt: skip
    assert p.returncode == 0, p.stdout[-4000:]
    assert "all steps passed" in p.stdout
    for name in ("smoke-sft", "smoke-dpo", "smoke-grpo", "smoke-eval"):
        assert json.loads((tmp_path / "out" / f"{name}.summary.json").read_text())
    sft = json.loads((tmp_path / "out" / "smoke-sft.summary.json").read_text())
    assert sft["backend"] == "unsloth" and sft["4bit"]["quant_type"] == "nf4", "the QLoRA chain, 4-bit on CPU too"
    assert all(f"== {step} " in p.stdout for step in ("grpo", "solve", "export-merged", "export-gguf"))


def test_grpo_step_time_splits_a_step_into_rollout_scoring_and_training(tiny_model, tmp_path):
    p = bench("grpo_step_time.py", "--model", str(tiny_model), "--steps", "2", "grpo.batch_size=4",
              "grpo.max_completion_length=32", tmp_path=tmp_path)  # fmt: skip
    result = json.loads((tmp_path / "results" / "grpo_step_time-cpu.json").read_text())
    parts = result["per_step"]
    assert all(parts[k]["seconds"] > 0 for k in ("whole step", "rollout", "score"))
    assert parts["train"]["seconds"] > 0, "the step outlasts its rollout and scoring"
    shares = [parts[k]["share"] for k in ("rollout", "score", "train")]
    assert sum(shares) == pytest.approx(1, abs=0.01) and "GRPO step" in p.stdout
    assert "| rollout |" in (tmp_path / "benchmarks.md").read_text(), "docs draw the parts as a table"


@pytest.mark.skipif(not vllm_engine.available(), reason="vllm is not installed (tests/test_vllm.py says how)")
def test_engine_throughput_hf_vs_vllm_on_the_same_prompts(shared_data, tmp_path):
    p = bench("engine_throughput.py", "--shapes", "tiny", "--problems", "3", "--max-new-tokens", "8", "--samples", "2",
              "--work-dir", str(tmp_path / "work"), tmp_path=tmp_path)  # fmt: skip
    result = json.loads((tmp_path / "results" / "engine_throughput-cpu.json").read_text())
    sides = {run["side"]: run for run in result["runs"]}
    hf, vllm = sides["tiny hf"], sides["tiny vllm"]
    assert (hf["engine"], vllm["engine"]) == ("hf", "vllm"), "each side served by its own engine, no fall-back"
    for side in (hf, vllm):
        assert (
            side["dtype"] == "float32" and side["greedy"]["completions"] == 3 and side["sampling"]["completions"] == 6
        )
        assert side["greedy"]["problems_per_s"] > 0 and 0 < side["sampling"]["tokens_per_completion"] <= 8
    assert hf["greedy_completions"] == vllm["greedy_completions"], "greedy fp32: the same text, tokens and ends"
    assert result["ratios"]["tiny vllm/hf"]["greedy equal"] == 1
    assert result["cpu_rule"].startswith("tiny: ") and "eval.engine auto on this CPU" in p.stdout
    assert "engine_throughput" in (tmp_path / "benchmarks.md").read_text()


@pytest.mark.skipif(not vllm_engine.available(), reason="vllm is not installed (tests/test_vllm.py says how)")
def test_auto_engine_on_cpu_is_the_benchs_rule(tmp_path):
    """`eval.engine: auto` without CUDA: vLLM for a 16-bit model of Qwen2.5-0.5B's shape, where
    bench/engine_throughput.py measured it faster; HF for the tiny model and for any 4-bit base."""
    import torch
    from transformers import Qwen2Config

    from fastmath.config import ModelConfig

    if torch.cuda.is_available():
        pytest.skip("the CPU rule: on CUDA auto is vLLM whatever the model")
    Qwen2Config(**common.QWEN25, **common.SHAPES["0.5b"]).save_pretrained(tmp_path / "0.5b")
    tiny = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, vocab_size=2048)
    Qwen2Config(**tiny, num_key_value_heads=2).save_pretrained(tmp_path / "tiny")
    half = ModelConfig(name=str(tmp_path / "0.5b"), load_in_4bit=False)
    assert vllm_engine._parameters(half) == pytest.approx(494_032_768, rel=0.1)
    assert vllm_engine.resolve("auto", half) == "vllm"
    assert vllm_engine.resolve("auto", ModelConfig(name=str(tmp_path / "0.5b"), load_in_4bit=True)) == "hf"
    assert vllm_engine.resolve("auto", ModelConfig(name=str(tmp_path / "tiny"), load_in_4bit=False)) == "hf"
    assert vllm_engine.resolve("auto", ModelConfig(name=str(tmp_path / "missing"), load_in_4bit=False)) == "hf"
    assert vllm_engine.resolve("auto") == "hf" and vllm_engine.resolve("hf", half) == "hf"
