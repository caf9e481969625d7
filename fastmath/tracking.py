"""What a training run measures: tokens processed and padded, metrics per step, peak memory.

Shared by SFT and DPO so every run directory carries the same figures.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from fastmath.io import JsonlAppender, read_jsonl


class TokenCounter:
    """Wraps a data collator and counts the tokens of every batch it builds.

    `pad` counts positions the model computes but that carry no token (attention_mask == 0);
    padding-free batches have none by construction. `trained` counts positions with a label.
    """

    def __init__(self, collator):
        self.collator = collator
        self.tokens = 0
        self.pad = 0
        self.trained = 0

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collator(examples)
        ids, mask = batch["input_ids"], batch.get("attention_mask")
        total = ids.numel()
        pad = int((mask == 0).sum()) if mask is not None else 0
        self.tokens += total - pad
        self.pad += pad
        if "labels" in batch:  # SFT
            self.trained += int((batch["labels"] != -100).sum())
        elif "completion_mask" in batch:  # DPO: chosen and rejected completions
            self.trained += int(batch["completion_mask"].sum())
        return batch


class MetricsCallback(TrainerCallback):
    """Appends each logging step to metrics.jsonl (main process), with tokens/s since the last log.

    Tokens come from TRL's `num_tokens` (non-pad tokens of the batches computed, summed over
    processes). On resume, lines past the checkpoint's step are dropped first: they are logged again.
    """

    def __init__(self, path: Path):
        self.path = path
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
        row.update({k: v for k, v in logs.items() if isinstance(v, (int, float))})
        if "num_tokens" in logs:
            now, tokens = time.perf_counter(), logs["num_tokens"]
            if self._last is not None and now > self._last[0]:
                row["tokens_per_s"] = round((tokens - self._last[1]) / (now - self._last[0]), 1)
            self._last = (now, tokens)
        self._out.write(row)

    def on_train_end(self, args, state, control, **kwargs):
        if self._out is not None:
            self._out.close()
            self._out = None


def reset_peak_memory() -> None:
    """Start a new peak: CUDA's allocator statistics, or Linux's peak resident set (VmHWM)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    elif Path("/proc/self/clear_refs").exists():
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory() -> dict[str, Any]:
    """Peak since `reset_peak_memory`: GPU memory allocated by torch on CUDA, else the peak resident set."""
    import torch

    if torch.cuda.is_available():
        return {"peak_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 3), "peak_memory_kind": "cuda"}
    status = Path("/proc/self/status")
    if status.exists():
        kib = next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("VmHWM"))
    else:  # macOS: lifetime peak, in bytes
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"peak_memory_gb": round(kib / 2**20, 3), "peak_memory_kind": "cpu_rss"}
