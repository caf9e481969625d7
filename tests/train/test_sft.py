"""SFT end to end on the tiny model: masking, padding-free batches, overfit, resume, DDP, hub errors."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from fastmath import runs
from fastmath.config import load_recipe
from fastmath.data import load_problems
from fastmath.errors import FastmathError
from fastmath.grading import extract_answer
from fastmath.train.sft import run_sft

from ..conftest import GSM8K_TRAIN, REPO, fastmath_cli, free_port
from .interrupt import Interrupt, adapter_difference


def _trainer_dataset(recipe):
    """The dataset exactly as TRL's SFTTrainer prepares it for training (labels included)."""
    from trl import SFTConfig, SFTTrainer

    from fastmath.models import load_for_training
    from fastmath.train.sft import sft_dataset

    model, tokenizer = load_for_training(recipe.model, recipe.lora, "hf", gradient_checkpointing=False)
    problems = load_problems(recipe.data.train, limit=recipe.data.limit)
    args = SFTConfig(
        output_dir="/tmp/unused",
        padding_free=True,
        max_length=None,
        completion_only_loss=True,
        bf16=False,
        report_to=[],
    )
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=sft_dataset(problems, tokenizer, recipe), processing_class=tokenizer
    )
    return trainer, model, tokenizer, problems


def test_loss_is_on_the_answer_and_its_end_token_only(tiny_recipe, shared_data):
    trainer, _, tokenizer, problems = _trainer_dataset(tiny_recipe(**{"data.train": str(GSM8K_TRAIN), "data.limit": 4}))
    for row, problem in zip(trainer.train_dataset, problems, strict=True):
        trained = [t for t in row["labels"] if t != -100]
        assert tokenizer.decode(trained) == problem.target() + "<|im_end|>"
        first = row["labels"].index(trained[0])
        prompt = tokenizer.decode(row["input_ids"][:first])
        assert prompt.endswith("<|im_start|>assistant\n") and problem.question in prompt
        assert all(t == -100 for t in row["labels"][:first])


def test_padding_free_batch_loss_equals_mean_of_examples_alone(tiny_recipe, shared_data):
    """One padding-free row (no attention mask, positions restarting per example) gives each
    example exactly the loss it has alone: no example attends to another."""
    trainer, model, _, _ = _trainer_dataset(tiny_recipe(**{"data.train": str(GSM8K_TRAIN), "data.limit": 6}))
    rows = [{k: r[k] for k in ("input_ids", "labels")} for r in trainer.train_dataset]
    batch = trainer.data_collator(rows)
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
    model.eval()
    with torch.no_grad():
        packed = model(**batch).loss
        sums, counts = [], []
        for r in rows:
            ids, labels = torch.tensor([r["input_ids"]]), torch.tensor([r["labels"]])
            n = int((labels[:, 1:] != -100).sum())
            sums.append(model(input_ids=ids, labels=labels).loss * n)
            counts.append(n)
    alone = torch.stack(sums).sum() / sum(counts)
    # the collator masks each example's first label; it is a prompt token here, so counts agree
    assert int((batch["labels"] != -100).sum()) == sum(counts)
    torch.testing.assert_close(packed, alone, rtol=1e-5, atol=1e-5)
    # and the same examples padded, with attention masks: the classic path agrees too
    trainer.data_collator.padding_free = False
    with torch.no_grad():
        padded = model(**trainer.data_collator(rows)).loss
    torch.testing.assert_close(padded, alone, rtol=1e-5, atol=1e-5)


def test_overfit_sixteen_problems_and_reproduce_their_answers(overfit_run, tiny_model, shared_data):
    """Template, masking, training, saving, reloading (plain peft) and generation fit together."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fastmath.prompts import chat_messages, prompt_text

    summary = json.loads((overfit_run / "summary.json").read_text())
    assert summary["examples"] == 16 and summary["pad_fraction"] == 0.0 and summary["final_loss"] < 0.1
    assert summary["batching"] == summary["batching_seen"] == "padding_free", "what ran, seen in the batches"
    assert summary["dtype"] == "float32"
    tokenizer = AutoTokenizer.from_pretrained(overfit_run, padding_side="left")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), overfit_run).eval()
    problems = load_problems(str(GSM8K_TRAIN), limit=16)
    prompts = [prompt_text(tokenizer, chat_messages(p.question)) for p in problems]
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=256, do_sample=False)
    texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    right = sum(extract_answer(t) == p.gold for t, p in zip(texts, problems, strict=True))
    assert right / len(problems) >= 0.8, f"only {right}/16 answers reproduced"


def test_run_directory_has_what_the_docs_promise(overfit_run):
    names = {p.name for p in overfit_run.iterdir()}
    assert {
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
        "recipe.yaml",
        "run.json",
        "metrics.jsonl",
        "summary.json",
    } <= names
    rows = [json.loads(line) for line in (overfit_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == sorted({r["step"] for r in rows})
    assert all({"step", "loss", "learning_rate", "grad_norm", "epoch"} <= r.keys() for r in rows)
    assert all(r["tokens_per_s"] > 0 for r in rows[1:])
    summary = json.loads((overfit_run / "summary.json").read_text())
    for key in (
        "final_loss",
        "tokens",
        "trained_tokens",
        "pad_fraction",
        "wall_time_s",
        "peak_memory_gb",
        "backend",
        "versions",
    ):
        assert key in summary
    assert summary["backend"] == "hf" and summary["versions"]["trl"] == "1.14.2"
    assert json.loads((overfit_run / "run.json").read_text())["status"] == "finished"
    assert load_recipe(overfit_run / "recipe.yaml").data.limit == 16


@pytest.mark.slow  # trains in a real process
def test_interrupted_run_resumes_to_the_same_end(tiny_recipe, shared_data):
    settings = {
        "data.train": str(GSM8K_TRAIN),
        "data.limit": 24,
        "training.max_steps": 6,
        "training.save_steps": 2,
        "training.logging_steps": 1,
    }
    whole = run_sft(tiny_recipe(**settings, **{"training.run_name": "whole"}), "hf")

    cut = tiny_recipe(**settings, **{"training.run_name": "cut"})
    with pytest.raises(KeyboardInterrupt):
        run_sft(cut, "hf", callbacks=(Interrupt(at=3),))
    cut_dir = Path(cut.training.output_dir) / "cut"
    assert json.loads((cut_dir / "run.json").read_text())["status"] == "stopped"
    assert (cut_dir / "checkpoint-2").is_dir() and not (cut_dir / "adapter_model.safetensors").exists()
    with pytest.raises(FastmathError, match="no finished sft run"):  # a stopped run is never the newest finished one
        runs.latest(cut.training.output_dir, "sft")

    before = json.loads((cut_dir / "checkpoint-2" / "fastmath_counts.json").read_text())
    (cut_dir / "checkpoint-3").mkdir()  # what Ctrl-C in the middle of a save leaves: skipped on resume
    (cut_dir / "checkpoint-3" / "README.md").write_text("model card, written first")

    p = fastmath_cli("sft", "--resume", str(cut_dir), timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "from checkpoint-2" in p.stdout
    resumed = json.loads((cut_dir / "summary.json").read_text())
    uninterrupted = json.loads((whole / "summary.json").read_text())
    assert resumed["steps"] == uninterrupted["steps"] == 6
    for key in ("tokens", "trained_tokens", "pad_fraction"):  # the whole run, not the resumed segment
        assert resumed[key] == uninterrupted[key], key
    assert resumed["wall_time_s"] > before["wall_time_s"] > 0, "the first segment's time is counted too"
    assert json.loads((cut_dir / "run.json").read_text())["status"] == "finished"
    steps = [json.loads(line)["step"] for line in (cut_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6], "metrics.jsonl must not repeat or skip steps after a resume"
    assert adapter_difference(cut_dir, whole) < 1e-6, "the same adapter (measured equal to the bit)"


def test_a_run_that_fails_is_marked_failed_with_its_error(tiny_recipe, shared_data):
    class Explode(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            raise RuntimeError("disk on fire")

    recipe = tiny_recipe(**{"data.train": str(GSM8K_TRAIN), "data.limit": 8, "training.max_steps": 3})
    with pytest.raises(RuntimeError):
        run_sft(recipe, "hf", callbacks=(Explode(),))
    (run_dir,) = Path(recipe.training.output_dir).iterdir()
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "failed" and meta["error"] == "RuntimeError: disk on fire"
    with pytest.raises(FastmathError, match="no finished sft run"):
        runs.latest(recipe.training.output_dir, "sft")


@pytest.mark.slow  # trains in a real process
def test_accelerate_launch_two_processes_ddp(tiny_model, shared_data, tmp_path):
    """The multi-GPU path, for real: DDP over gloo on two CPU processes.

    accelerate 1.15's `--cpu` starts several processes only through mpirun; `--multi_gpu`
    starts them through torchrun, and without CUDA our trainer args select gloo DDP.
    """
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        "-m",
        "fastmath",
        "sft",
        "recipes/tiny-sft.yaml",
        f"model.name={tiny_model}",
        f"data.train={GSM8K_TRAIN}",
        "data.limit=16",
        "training.max_steps=3",
        f"training.output_dir={tmp_path}",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    (run_dir,) = tmp_path.iterdir()  # both ranks agreed on one timestamped run directory
    assert p.stdout.count("run finished") == 1
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 3
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), run_dir)
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b), "the adapter must hold trained weights"


def test_unreachable_hub_fails_fast_with_the_fixes(tmp_path):
    env = {"HF_ENDPOINT": f"http://127.0.0.1:{free_port()}", "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0"}
    start = time.monotonic()
    p = fastmath_cli(
        "sft",
        "recipes/qwen2.5-7b-sft.yaml",
        "model.backend=hf",
        f"training.output_dir={tmp_path / 'out'}",
        env=env,
        timeout=120,
    )
    elapsed = time.monotonic() - start
    assert p.returncode == 2 and elapsed < 30, (elapsed, p.stderr[-2000:])
    assert "the hub at http://127.0.0.1" in p.stderr and "is unreachable" in p.stderr
    for fix in (
        "HF_ENDPOINT=https://hf-mirror.com",
        "hf download openai/gsm8k --repo-type dataset",
        "HF_HUB_OFFLINE=1",
    ):
        assert fix in p.stderr
    assert "Traceback" not in p.stderr and not (tmp_path / "out").exists()


def test_auto_batching_is_padding_free_only_where_attention_takes_variable_length_rows():
    from fastmath.train.sft import resolve_batching

    assert resolve_batching("auto", "unsloth", "sdpa") == "padding_free"
    assert resolve_batching("auto", "hf", "flash_attention_2") == "padding_free"
    assert resolve_batching("auto", "hf", "sdpa") == "padded"
    assert resolve_batching("packed", "hf", "sdpa") == "packed"
