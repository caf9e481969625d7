"""Supervised fine-tuning: recipe -> data -> LoRA model -> TRL SFTTrainer -> run directory.

    python -m fastmath sft recipes/qwen2.5-7b-sft.yaml training.num_epochs=1 lora.r=8
    python -m fastmath sft --resume outputs/<run>           # continue from its last checkpoint
    accelerate launch --multi_gpu --num_processes 2 -m fastmath sft RECIPE model.backend=hf   # DDP

Read top to bottom: `run_sft` is the whole recipe.
"""

from __future__ import annotations

from pathlib import Path

from fastmath import runs
from fastmath.config import Recipe
from fastmath.errors import FastmathError
from fastmath.log import log
from fastmath.tasks import training_problems


def sft_dataset(problems, tokenizer, recipe: Recipe):
    """Tokenize problems into `input_ids` + `completion_mask` (loss on the answer only).

    Examples longer than `model.max_seq_length` are dropped and counted, never cut: a
    truncated solution would teach the model to stop before its final answer.
    """
    from datasets import Dataset

    from fastmath.prompts import chat_messages, encode_example

    rows, too_long = [], 0
    for p in problems:
        row = encode_example(
            tokenizer,
            chat_messages(p.question, p.lang, recipe.data.system_prompt),
            p.target(recipe.data.keep_calculator),
        )
        if len(row["input_ids"]) > recipe.model.max_seq_length:
            too_long += 1
            continue
        rows.append(row)
    if too_long:
        log.warning(f"dropped {too_long} example(s) longer than model.max_seq_length={recipe.model.max_seq_length}")
    if not rows:
        raise FastmathError("every example is longer than model.max_seq_length; raise it in the recipe")
    return Dataset.from_list(rows)


def resolve_batching(batching: str, backend: str, attn_implementation: str) -> str:
    """`auto`: padding-free where attention kernels take variable-length rows, padded elsewhere.

    Under SDPA a padding-free row is one long sequence with a block-diagonal mask: correct, but
    its attention cost grows with the square of the whole row (bench/sft_throughput.py measures it).
    """
    if batching != "auto":
        return batching
    return "padding_free" if backend == "unsloth" or attn_implementation.startswith("flash") else "padded"


def run_sft(recipe: Recipe, backend: str, resume: Path | None = None, callbacks: tuple = ()) -> Path:
    """Train a LoRA adapter as the recipe says; return the run directory."""
    # Inputs first: a bad data file or an unreachable hub fails in seconds, before a run directory exists.
    problems = training_problems(recipe.data, recipe.data.limit)
    from trl import SFTConfig, SFTTrainer

    from fastmath.models import load_for_training
    from fastmath.train.trainer import backend_changes, train, trainer_args

    model, tokenizer = load_for_training(
        recipe.model,
        recipe.lora,
        backend,
        gradient_checkpointing=recipe.training.gradient_checkpointing,
        seed=recipe.training.seed,
    )
    dataset = sft_dataset(problems, tokenizer, recipe)
    run_dir = resume or runs.create(recipe, "sft")

    batching = resolve_batching(recipe.training.batching, backend, recipe.model.attn_implementation)
    with runs.marking_failure(run_dir):
        requested = dict(
            **trainer_args(recipe, run_dir, backend, "sft"),
            # padding_free: each batch is one row of its examples back to back, positions restarting
            # at 0 per example, no padding; packed: rows of max_seq_length filled best-fit.
            padding_free=batching == "padding_free",
            packing=batching == "packed",
            max_length=None if batching == "padding_free" else recipe.model.max_seq_length,
            completion_only_loss=True,
            loss_type="nll",
            dataset_num_proc=None,
        )
        config = SFTConfig(**requested)
        changed = backend_changes(requested, config)
        trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    info = {"stage": "sft", "backend": backend, "base_model": recipe.model.name, "examples": len(dataset)}
    info |= {"batching": batching, "changed_by_backend": changed}
    train(trainer, tokenizer, run_dir, info, resume=resume is not None, callbacks=callbacks)
    return run_dir


def main(inv) -> int:
    run_sft(inv.recipe, inv.backend, resume=inv.resume)
    return 0
