"""Supervised fine-tuning: recipe -> data -> LoRA model -> TRL SFTTrainer -> run directory.

    python -m fastmath sft recipes/qwen2.5-7b-sft.yaml training.num_epochs=1 lora.r=8
    python -m fastmath sft --resume outputs/<run>           # continue from its last checkpoint
    accelerate launch -m fastmath sft RECIPE model.backend=hf   # several GPUs (DDP)

Read top to bottom: `run_sft` is the whole recipe.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from fastmath import rundir
from fastmath.config import Recipe, load_recipe, parse_overrides
from fastmath.data import load_problems
from fastmath.errors import FastmathError
from fastmath.models import activate, resolve_backend

DEFAULT_RECIPE = "recipes/qwen2.5-7b-sft.yaml"


def sft_dataset(problems, tokenizer, recipe: Recipe):
    """Tokenize problems into `input_ids` + `completion_mask` (loss on the answer only).

    Examples longer than `model.max_seq_length` are dropped and counted, never cut: a
    truncated solution would teach the model to stop before its final answer.
    """
    from datasets import Dataset

    from fastmath.prompts import chat_messages
    from fastmath.templates import encode_example

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
        print(f"warning: dropped {too_long} example(s) longer than model.max_seq_length={recipe.model.max_seq_length}")
    if not rows:
        raise FastmathError("every example is longer than model.max_seq_length; raise it in the recipe")
    return Dataset.from_list(rows)


def trainer_args(recipe: Recipe, run_dir: Path, backend: str, **extra):
    """TrainingArguments fields shared by SFT and DPO (TRL's configs subclass them)."""
    import torch

    from fastmath.models import torch_dtype, use_4bit

    t = recipe.training
    optim = t.optim
    if optim == "auto":
        optim = "adamw_8bit" if use_4bit(recipe.model) else "adamw_torch"
    dtype = torch_dtype(recipe.model)
    return dict(
        output_dir=str(run_dir),
        num_train_epochs=t.num_epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,  # transformers 5: a float < 1 is a ratio of total steps
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        optim=optim,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        # Unsloth applies its own (offloaded) checkpointing inside get_peft_model.
        gradient_checkpointing=t.gradient_checkpointing and backend == "hf",
        logging_steps=t.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        seed=t.seed,
        report_to=[] if t.report_to == "none" else [t.report_to],
        # Without CUDA, use_cpu makes several processes (accelerate/torchrun) real DDP over gloo.
        use_cpu=not torch.cuda.is_available(),
        ddp_backend=None if torch.cuda.is_available() else "gloo",
        ddp_find_unused_parameters=False,
        disable_tqdm=False,
        **extra,
    )


def run_sft(recipe: Recipe, resume: Path | None = None, callbacks: tuple = ()) -> Path:
    """Train a LoRA adapter as the recipe says; return the run directory."""
    backend = resolve_backend(recipe.model)
    activate(backend)  # Unsloth first, before trl/transformers load
    import torch
    from trl import SFTConfig, SFTTrainer

    from fastmath.models import load_for_training
    from fastmath.tracking import MetricsCallback, TokenCounter, peak_memory

    # Inputs first: a bad data file or an unreachable hub must fail before a run directory exists.
    problems = load_problems(
        recipe.data.train, recipe.data.split, recipe.data.subset, recipe.data.limit, recipe.data.language
    )
    model, tokenizer = load_for_training(
        recipe.model, recipe.lora, backend, gradient_checkpointing=recipe.training.gradient_checkpointing
    )
    dataset = sft_dataset(problems, tokenizer, recipe)
    run_dir = resume or rundir.create(recipe, "sft")

    batching = recipe.training.batching
    config = SFTConfig(
        **trainer_args(recipe, run_dir, backend),
        # padding_free: each batch is one row of its examples back to back, positions restarting
        # at 0 per example, no padding; packed: rows of max_seq_length filled best-fit.
        padding_free=batching == "padding_free",
        packing=batching == "packed",
        max_length=None if batching == "padding_free" else recipe.model.max_seq_length,
        completion_only_loss=True,
        loss_type="nll",
        dataset_num_proc=None,
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    counter = TokenCounter(trainer.data_collator)
    trainer.data_collator = counter  # after __init__, which rejects custom collators with padding-free
    trainer.add_callback(MetricsCallback(run_dir / "metrics.jsonl"))
    for callback in callbacks:
        trainer.add_callback(callback)

    checkpoint = rundir.last_checkpoint(run_dir) if resume else None
    if resume:
        print(f"resuming {run_dir} from {checkpoint.name if checkpoint else 'the start (no checkpoint yet)'}")
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    wall = time.perf_counter() - start

    trainer.save_model(str(run_dir))  # adapter_config.json + adapter_model.safetensors
    counts = torch.tensor([counter.tokens, counter.pad, counter.trained], device=trainer.accelerator.device)
    totals = trainer.accelerator.reduce(counts, "sum").tolist()  # summed over DDP processes
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(run_dir))
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        rundir.finish(
            run_dir,
            {
                "stage": "sft",
                "backend": backend,
                "base_model": recipe.model.name,
                "examples": len(dataset),
                "steps": trainer.state.global_step,
                "epochs": round(trainer.state.epoch or 0.0, 4),
                "final_loss": losses[-1] if losses else None,
                "train_loss": result.training_loss,
                "tokens": int(totals[0]),
                "trained_tokens": int(totals[2]),
                "pad_fraction": round(totals[1] / max(1, totals[0] + totals[1]), 4),
                "batching": batching,
                "wall_time_s": round(wall, 2),
                "tokens_per_s": round(totals[0] / max(wall, 1e-9), 1),
                "processes": trainer.accelerator.num_processes,
                **peak_memory(),
                "versions": rundir.library_versions(),
            },
        )
        print(f"run finished: {run_dir}")
    return run_dir


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fastmath sft", description=__doc__.split("\n")[0], allow_abbrev=False
    )
    parser.add_argument("recipe", nargs="?", default=None, help=f"YAML recipe (default {DEFAULT_RECIPE})")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its last checkpoint")
    args, rest = parser.parse_known_args(argv)
    if args.recipe and "=" in args.recipe:  # `sft key=value` with no recipe file
        rest.insert(0, args.recipe)
        args.recipe = None
    overrides = parse_overrides(rest)
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "recipe.yaml").is_file():
            raise FastmathError(f"--resume {run_dir}: not a run directory (no recipe.yaml in it)")
        if overrides:
            raise FastmathError("--resume continues a run exactly as recorded; drop the key=value overrides")
        run_sft(load_recipe(run_dir / "recipe.yaml"), resume=run_dir)
    else:
        run_sft(load_recipe(args.recipe or DEFAULT_RECIPE, overrides))
    return 0
