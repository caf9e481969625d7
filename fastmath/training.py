"""What SFT and DPO share around TRL's trainers: their arguments, and the run's closing summary.

Imported only after `models.activate(backend)`, like everything that pulls in trl.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from fastmath import rundir
from fastmath.config import Recipe
from fastmath.models import torch_dtype, use_4bit
from fastmath.tracking import MetricsCallback, TokenCounter, peak_memory, reset_peak_memory


def trainer_args(recipe: Recipe, run_dir: Path, backend: str) -> dict[str, Any]:
    """TrainingArguments fields shared by SFT and DPO (TRL's configs subclass them)."""
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
        ddp_backend="gloo" if not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        ddp_find_unused_parameters=False,
        disable_tqdm=False,
    )


def train(trainer, tokenizer, run_dir: Path, info: dict[str, Any], resume: bool = False, callbacks: tuple = ()) -> None:
    """Train (from the last checkpoint when resuming), then save the adapter and write summary.json."""
    counter = TokenCounter(trainer.data_collator)
    trainer.data_collator = counter  # set after __init__, which rejects custom collators with padding-free
    trainer.add_callback(MetricsCallback(run_dir / "metrics.jsonl"))
    for callback in callbacks:
        trainer.add_callback(callback)
    checkpoint = rundir.last_checkpoint(run_dir) if resume else None
    if resume:
        print(f"resuming {run_dir} from {checkpoint.name if checkpoint else 'the start (no checkpoint yet)'}")
    reset_peak_memory()
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    wall = time.perf_counter() - start

    # Only the trained adapter: DPO's frozen "ref" copy is the parent run's adapter already.
    trainer.accelerator.unwrap_model(trainer.model).save_pretrained(str(run_dir), selected_adapters=["default"])
    counts = torch.tensor([counter.tokens, counter.pad, counter.trained], device=trainer.accelerator.device)
    tokens, pad, trained = trainer.accelerator.reduce(counts, "sum").tolist()  # summed over DDP processes
    if not trainer.is_world_process_zero():
        return
    tokenizer.save_pretrained(str(run_dir))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    rundir.finish(
        run_dir,
        {
            **info,
            "steps": trainer.state.global_step,
            "epochs": round(trainer.state.epoch or 0.0, 4),
            "final_loss": losses[-1] if losses else None,
            "train_loss": result.training_loss,
            "tokens": int(tokens),
            "trained_tokens": int(trained),
            "pad_fraction": round(pad / max(1, tokens + pad), 4),
            "wall_time_s": round(wall, 2),
            "tokens_per_s": round(tokens / max(wall, 1e-9), 1),
            "processes": trainer.accelerator.num_processes,
            **peak_memory(),
            "versions": rundir.library_versions(),
        },
    )
    print(f"run finished: {run_dir}")
