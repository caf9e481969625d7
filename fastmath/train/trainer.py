"""What SFT, DPO and GRPO share around TRL's trainers: their arguments, what a run measures, and
its closing summary.

Measured from the batches the model actually computed (counted where the loss is computed, not
where batches are built, since the data loader reads one batch ahead): tokens, pad positions,
trained positions, and the batching those batches really had, which can differ from what the
recipe asked for when a backend changes it. The counts and the wall time are saved with every
checkpoint, so a resumed run reports its whole length, not the last segment.

Imported only after the backend is active (`fastmath.cli`), like everything that pulls in trl.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from fastmath import card, runs, stages, trackers
from fastmath.config import Recipe
from fastmath.io import JsonlAppender, atomic_write_json, read_jsonl
from fastmath.log import log
from fastmath.models import loaded_dtype, quantization, torch_dtype, use_4bit

COUNTS = "fastmath_counts.json"  # saved in each checkpoint-N/
# Trainer settings a backend may change behind the recipe's back (Unsloth's patched TRL configs
# turn padding-free and packing off and pick another optimizer): compared after the config is built.
WATCHED: tuple[str, ...] = (
    "padding_free",
    "packing",
    "optim",
    "bf16",
    "fp16",
    "gradient_checkpointing",
    "per_device_train_batch_size",
)
WATCHED += ("loss_type", "beta", "mask_truncated_completions", "epsilon_high", "use_vllm")  # GRPO's


def trainer_args(recipe: Recipe, run_dir: Path, backend: str, stage: str) -> dict[str, Any]:
    """TrainingArguments fields shared by the stages (TRL's configs subclass them), with the stage's schedule."""
    t, schedule = recipe.training, recipe.schedule(stage)
    optim = t.optim
    if optim == "auto":
        optim = "adamw_8bit" if use_4bit(recipe.model) else "adamw_torch"
    dtype = torch_dtype(recipe.model)
    return dict(
        output_dir=str(run_dir),
        num_train_epochs=schedule.num_epochs,
        max_steps=schedule.max_steps,
        per_device_train_batch_size=schedule.batch_size,
        learning_rate=schedule.learning_rate,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
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
        report_to=[name for name in t.report_to if name == "tensorboard"],  # the others: fastmath.trackers
        # Without CUDA, use_cpu makes several processes (accelerate/torchrun) real DDP over gloo.
        use_cpu=not torch.cuda.is_available(),
        ddp_backend="gloo" if not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        ddp_find_unused_parameters=False,
        disable_tqdm=False,
    )


def backend_changes(requested: dict[str, Any], config) -> dict[str, list[Any]]:
    """`{setting: [asked, got]}` for each watched setting the built config does not hold as asked,
    with one warning naming them: what ran is then recorded, not what was asked."""
    built = {key: getattr(config, key) for key in WATCHED if key in requested and hasattr(config, key)}
    built = {key: getattr(value, "value", value) for key, value in built.items()}  # enums as their names
    changed = {key: [requested[key], value] for key, value in built.items() if value != requested[key]}
    if changed:
        shown = ", ".join(f"{key} {asked} -> {got}" for key, (asked, got) in changed.items())
        log.warning(f"the backend changed what the recipe asked for: {shown}")
    return changed


def batch_layout(batch: dict[str, Any]) -> str:
    """How a batch is laid out: padded (pad positions), padding_free (one row of several examples,
    positions restarting), packed (several such rows) or plain (rows of one example, no pads)."""
    mask = batch.get("attention_mask")
    if isinstance(mask, torch.Tensor) and bool((mask == 0).any()):
        return "padded"
    positions = batch.get("position_ids")
    if isinstance(positions, torch.Tensor) and positions.dim() == 2 and bool((positions[:, 1:] == 0).any()):
        return "padding_free" if positions.shape[0] == 1 else "packed"
    return "plain"


def _rollouts(batch: dict[str, Any]) -> tuple[int, int, int, str]:
    """GRPO: prompts and sampled completions, each with its mask (no input_ids)."""
    prompt, completion = batch["prompt_mask"], batch["completion_mask"]
    real = int(prompt.sum() + completion.sum())
    pad = prompt.numel() + completion.numel() - real
    return real, pad, int(completion.sum()), "padded" if pad else "plain"


def _rows(batch: dict[str, Any], trained: int) -> tuple[int, int, int, str]:
    ids, mask = batch["input_ids"], batch.get("attention_mask")
    pad = int((mask == 0).sum()) if isinstance(mask, torch.Tensor) else 0
    return ids.numel() - pad, pad, trained, batch_layout(batch)


# (tokens, pad, trained, layout) of one batch, by the stage's kind of batches (`stages.BATCHES`).
COUNTERS = {
    "labels": lambda batch: _rows(batch, int((batch["labels"] != -100).sum())),
    "completions": lambda batch: _rows(batch, int(batch["completion_mask"].sum())),
    "rollouts": _rollouts,
}


class Counts:
    """Tokens, pad and trained positions of the batches computed, and their layouts, counted as
    the stage's record says its batches are laid out."""

    def __init__(self, batches: str = "labels") -> None:
        self.count = COUNTERS[batches]
        self.tokens = self.pad = self.trained = 0
        self.layouts: Counter[str] = Counter()

    def add(self, batch: dict[str, Any]) -> None:
        tokens, pad, trained, layout = self.count(batch)
        self.tokens, self.pad, self.trained = self.tokens + tokens, self.pad + pad, self.trained + trained
        self.layouts[layout] += 1

    def as_dict(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "pad": self.pad, "trained": self.trained, "layouts": dict(self.layouts)}

    def load(self, saved: dict[str, Any]) -> None:
        self.tokens, self.pad, self.trained = saved["tokens"], saved["pad"], saved["trained"]
        self.layouts = Counter(saved["layouts"])


def _counting(compute_loss, counts: Counts):
    """`trainer.compute_loss` that counts each micro-batch it is given."""

    def counted(model, inputs, *args, **kwargs):
        if model.training:
            counts.add(inputs)
        return compute_loss(model, inputs, *args, **kwargs)

    return counted


class MetricsCallback(TrainerCallback):
    """Appends each logging step to metrics.jsonl (main process), with tokens/s since the last log
    and the wall-clock time it was logged.

    Tokens come from TRL's `num_tokens` (non-pad tokens of the batches computed, summed over
    processes). On resume, lines past the checkpoint's step are dropped first: they are logged again.
    """

    def __init__(self, path: Path, sink=None):
        self.path, self.sink = path, sink  # sink: also given each row (the run's trackers)
        self._last: tuple[float, float] | None = None
        self._out: JsonlAppender | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        if self.path.exists():
            kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= state.global_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        self._out = JsonlAppender(self.path)
        self._last = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self._out is None or not logs or "train_runtime" in logs:  # the end-of-run totals: summary.json
            return
        row: dict[str, Any] = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
        row["max_steps"] = state.max_steps
        row["time"] = round(time.time(), 2)  # wall clock: the app's steps/s and time left
        row.update({k: v for k, v in logs.items() if isinstance(v, (int, float))})
        if "num_tokens" in logs:
            now, tokens = time.perf_counter(), logs["num_tokens"]
            if self._last is not None and now > self._last[0]:
                row["tokens_per_s"] = round((tokens - self._last[1]) / (now - self._last[0]), 1)
            self._last = (now, tokens)
        row.update(peak_memory())
        self._out.write(row)
        if self.sink is not None:
            self.sink(row)

    def on_train_end(self, args, state, control, **kwargs):
        if self._out is not None:
            self._out.close()
            self._out = None


class _Totals(TrainerCallback):
    """Saves the run's counts and wall time so far into each checkpoint, summed over processes."""

    def __init__(self, trainer, counts: Counts, clock: dict[str, float]):
        self.trainer, self.counts, self.clock = trainer, counts, clock

    def on_save(self, args, state, control, **kwargs):
        totals = reduced(self.trainer, self.counts)
        if state.is_world_process_zero:
            wall = self.clock["before"] + time.perf_counter() - self.clock["start"]
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}" / COUNTS
            atomic_write_json(path, {**totals, "wall_time_s": wall})


class StopOnCtrlC(TrainerCallback):
    """Ctrl-C (SIGINT: the app's Stop, or a terminal's) ends the run at the end of the current step
    with a checkpoint of that step, the kind `--resume` reads; a second Ctrl-C stops at once.

    The handler only raises a flag; the trainer's own loop then saves (`control.should_save`) and
    stops (`control.should_training_stop`) as after its last step. Under DDP every process gets the
    signal, not always in the same step: the flag is summed over processes each step, so all save
    and stop together.
    """

    def __init__(self, trainer) -> None:
        self.trainer, self.requested = trainer, False
        self.stopped_at: int | None = None

    @contextlib.contextmanager
    def armed(self):
        """The handler for the duration of `trainer.train` (only the main thread can set one)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self.requested:  # the second Ctrl-C: now
                raise KeyboardInterrupt
            self.requested = True
            log.warning("Ctrl-C: stopping after this step with a checkpoint (Ctrl-C again stops at once, unsaved)")

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def on_step_end(self, args, state, control, **kwargs):
        requested = self.requested
        if self.trainer.accelerator.num_processes > 1:
            flag = torch.tensor([int(requested)], device=self.trainer.accelerator.device)
            requested = bool(self.trainer.accelerator.reduce(flag, "sum").item())
        if requested:
            self.stopped_at = state.global_step
            control.should_save = control.should_log = control.should_training_stop = True


def reduced(trainer, counts: Counts) -> dict[str, Any]:
    """The counts summed over DDP processes (every process must call this)."""
    local = torch.tensor([counts.tokens, counts.pad, counts.trained], device=trainer.accelerator.device)
    tokens, pad, trained = trainer.accelerator.reduce(local, "sum").tolist()
    return {"tokens": int(tokens), "pad": int(pad), "trained": int(trained), "layouts": dict(counts.layouts)}


def adapter_in_fp32(model) -> None:
    """Train the LoRA weights in fp32 on every backend, fresh or resumed.

    TRL's trainers cast a 4-bit model's trainable weights to bf16 as they are built, but resuming
    loads the checkpoint's adapter through PEFT, which upcasts it to fp32: a QLoRA run resumed after
    a kill trained on in another precision than an uninterrupted one (its adapter ended 1-3% away).
    fp32 is what PEFT and Unsloth give adapters themselves; the 4-bit matmuls keep the compute dtype.
    """
    for param in model.parameters():
        if param.requires_grad and param.dtype in (torch.bfloat16, torch.float16):
            param.data = param.data.float()


def train(trainer, tokenizer, run_dir: Path, info: dict[str, Any], resume: bool = False, callbacks: tuple = ()) -> None:
    """Train (from the last checkpoint when resuming), then save the adapter and write summary.json.
    `info["stage"]` names the stage, whose record says how its batches are counted.

    A run that raises is marked failed in run.json before the error goes on. Ctrl-C finishes the
    step under way, saves its checkpoint, marks the run stopped and raises KeyboardInterrupt
    (`StopOnCtrlC`): `--resume` continues from that step.
    """
    counts = Counts(stages.get(info["stage"]).batches)
    trainer.compute_loss = _counting(trainer.compute_loss, counts)
    clock = {"before": 0.0, "start": time.perf_counter()}
    tracked = trackers.Trackers()
    trainer.add_callback(MetricsCallback(run_dir / runs.METRICS, tracked.log))
    trainer.add_callback(_Totals(trainer, counts, clock))
    for callback in callbacks:
        trainer.add_callback(callback)
    stop = StopOnCtrlC(trainer)
    trainer.add_callback(stop)
    checkpoint = runs.last_checkpoint(run_dir) if resume else None
    if resume:
        runs.resume(run_dir)
        log.info(f"resuming {run_dir} from {checkpoint.name if checkpoint else 'the start (no checkpoint yet)'}")
    if checkpoint is not None and (checkpoint / COUNTS).is_file():
        saved = json.loads((checkpoint / COUNTS).read_text(encoding="utf-8"))
        if trainer.is_world_process_zero():  # the other processes add their own share from here on
            counts.load(saved)
        clock["before"] = saved["wall_time_s"]
    adapter_in_fp32(trainer.model)
    reset_peak_memory()
    with runs.marking_failure(run_dir), tracked:
        if trainer.is_world_process_zero():
            tracked.open_for_training(run_dir)
        clock["start"] = time.perf_counter()
        with stop.armed():
            result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        if stop.stopped_at is not None:  # run.json says stopped (marking_failure); the checkpoint is there
            step = stop.stopped_at
            log.info(f"stopped at step {step}: checkpoint-{step} saved; --resume {run_dir} continues from it")
            raise KeyboardInterrupt
        wall = clock["before"] + time.perf_counter() - clock["start"]
        # Only the trained adapter: DPO's frozen "ref" copy is the parent run's adapter already.
        trainer.accelerator.unwrap_model(trainer.model).save_pretrained(str(run_dir), selected_adapters=["default"])
        totals = reduced(trainer, counts)
        if trainer.is_world_process_zero():
            _write_summary(trainer, tokenizer, run_dir, info, result.training_loss, totals, wall)
            card.write(run_dir)
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()  # under DDP, destroys the process group: no rank aborts at exit


def _write_summary(trainer, tokenizer, run_dir: Path, info: dict[str, Any], train_loss: float,
                   totals: dict[str, Any], wall: float) -> None:  # fmt: skip
    """The tokenizer beside the adapter, then summary.json and the run marked finished (main process)."""
    tokenizer.save_pretrained(str(run_dir))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    seen = [kind for kind, _ in Counter(totals["layouts"]).most_common()]
    runs.finish(
        run_dir,
        {
            **info,
            "batching_seen": seen[0] if len(seen) == 1 else seen,
            "dtype": loaded_dtype(trainer.model),
            "4bit": quantization(trainer.model),  # what loaded: nf4, double quant, compute dtype (None: 16/32-bit)
            "steps": trainer.state.global_step,
            "epochs": round(trainer.state.epoch or 0.0, 4),
            "final_loss": losses[-1] if losses else None,
            "train_loss": train_loss,
            "tokens": totals["tokens"],
            "trained_tokens": totals["trained"],
            "pad_fraction": round(totals["pad"] / max(1, totals["tokens"] + totals["pad"]), 4),
            "wall_time_s": round(wall, 2),
            "tokens_per_s": round(totals["tokens"] / max(wall, 1e-9), 1),
            "processes": trainer.accelerator.num_processes,
            "hardware": runs.hardware(),
            **peak_memory(),
            "versions": runs.library_versions(),
        },
    )


def reset_peak_memory() -> None:
    """Start a new peak: CUDA's allocator statistics, or Linux's peak resident set (VmHWM)."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    elif Path("/proc/self/clear_refs").exists():
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory() -> dict[str, Any]:
    """Peak since `reset_peak_memory`: GPU memory allocated by torch on CUDA, else the peak resident set."""
    if torch.cuda.is_available():
        return {"peak_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 3), "peak_memory_kind": "cuda"}
    status = Path("/proc/self/status")
    kib: float
    if status.exists():
        kib = next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("VmHWM"))
    else:  # macOS: lifetime peak, in bytes
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"peak_memory_gb": round(kib / 2**20, 3), "peak_memory_kind": "cpu_rss"}
