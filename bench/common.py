"""What the bench scripts share: paths, provenance, random-weight models, worker processes, figures, the docs table.

Every measured configuration runs in a fresh Python process (`run_worker`), one after the other:
Unsloth patches transformers and TRL for the whole process when it is imported, so a baseline
sharing its process would not be a baseline; and a process's peak memory and first loss are then
its own. This module imports no torch/transformers at the top, so a worker can still import
Unsloth first (`fastmath.models.activate`), as the training commands do.

    python -m bench.common          # rewrite docs/benchmarks.md from bench/results/*.json
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import math
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import datetime
from pathlib import Path
from typing import Any

from fastmath.io import atomic_write_json, atomic_write_text

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench" / "results"
DOCS = REPO / "docs" / "benchmarks.md"
SFT_RECIPE = REPO / "recipes" / "qwen2.5-7b-sft.yaml"
DPO_RECIPE = REPO / "recipes" / "qwen2.5-7b-dpo.yaml"
# GSM8K lives in ../shared beside the checkout; the GPU box sees only the repository, so a GPU
# session carries a copy in the git-ignored .gpu-data/ (docs/benchmarks.md has the commands).
GSM8K_DIRS = (REPO.parent / "shared" / "data" / "gsm8k", REPO / ".gpu-data" / "gsm8k")
GSM8K_TEST_SIZE = 1319

# Published Qwen2.5 configs (config.json of Qwen/Qwen2.5-7B-Instruct, -1.5B-Instruct and -0.5B-Instruct).
QWEN25 = {
    "max_position_embeddings": 32768,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0},
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "use_sliding_window": False,
    "max_window_layers": 28,
}
SHAPES: dict[str, dict[str, Any]] = {
    "0.5b": dict(  # Qwen/Qwen2.5-0.5B-Instruct
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        vocab_size=151936,
        tie_word_embeddings=True,
    ),
    "1.5b": dict(
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        vocab_size=151936,
        tie_word_embeddings=True,
    ),
    "7b": dict(
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        vocab_size=152064,
        tie_word_embeddings=False,
    ),
}
ALL_SHAPES = ("tiny", *SHAPES)  # tiny = fastmath.tiny's model, the one the tests train
MODEL_MARKER = "bench-model.json"


def gsm8k(split: str) -> Path:
    """GSM8K's `split`.jsonl from ../shared, or from .gpu-data/ on the GPU box."""
    for folder in GSM8K_DIRS:
        if (folder / f"{split}.jsonl").is_file():
            return folder / f"{split}.jsonl"
    return GSM8K_DIRS[0] / f"{split}.jsonl"  # load_problems names it in its error


def shown(path: str | Path) -> str:
    """A path as a reader of the results can follow it: relative to the repository when near it."""
    path = Path(path).resolve()
    for base, prefix in ((REPO, ""), (REPO.parent, "../")):
        with contextlib.suppress(ValueError):
            return prefix + str(path.relative_to(base))
    return str(path)


# --- provenance -----------------------------------------------------------------------------


def now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def git_state() -> dict[str, Any] | None:
    """Commit and whether the tree had uncommitted changes (None outside a git checkout)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
        status = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def provenance() -> dict[str, Any]:
    """When, how and with what a result was made: enough to run it again."""
    from fastmath.runs import library_versions

    env_keys = ("PYTHONPATH", "HF_HUB_OFFLINE", "CUDA_VISIBLE_DEVICES", "UNSLOTH_DISABLE_STATISTICS")
    return {
        "date": now(),
        "command": shlex.join(["python", *sys.argv]),
        "env": {k: os.environ[k] for k in env_keys if k in os.environ},
        "git": git_state(),
        "versions": library_versions(),
    }


def device_info() -> dict[str, Any]:
    """The accelerator the workers will use (torch's view of it), with a slug for file names."""
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        props = torch.cuda.get_device_properties(0)
        return {
            "kind": "cuda",
            "name": name,
            "slug": re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-"),
            "memory_gb": round(props.total_memory / 2**30, 1),
            "cuda": torch.version.cuda,
        }
    cpu = "cpu"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "kind": "cpu",
        "name": cpu,
        "slug": "cpu",
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


# --- random-weight models -----------------------------------------------------------------


def model_dir(work_dir: Path, shape: str) -> Path:
    return work_dir / "models" / f"qwen2.5-{shape}-random"


def built_model(path: Path) -> dict[str, Any] | None:
    """The build record of a bench model directory, or None if it was never finished."""
    marker = path / MODEL_MARKER
    return json.loads(marker.read_text(encoding="utf-8")) if marker.is_file() else None


def ensure_model(shape: str, path: Path) -> dict[str, Any]:
    """The model of `shape` at `path`, built (in a worker) unless an earlier run finished it there."""
    record = built_model(path)
    if record is None or record.get("shape") != shape:
        print(f"building the {shape} model with random weights in {shown(path)} (once; later runs reuse it)")
        record = run_worker("bench.common:build_task", {"shape": shape, "path": str(path)})
        if "error" in record:
            raise SystemExit(f"could not build the {shape} model: {record['error']}")
    return record


def model_or_tiny(model: Path | None, tmp: Path) -> tuple[Path, dict[str, Any]]:
    """(`--model` as given, or the tiny model built in `tmp`) and its record for the result file."""
    if model is not None:
        return model.resolve(), {"shape": "custom", "path": shown(model)}
    record = ensure_model("tiny", tmp / "tiny-qwen2")
    return tmp / "tiny-qwen2", {**record, "path": "a temp dir (deleted after the run)"}


def build_task(spec: dict[str, Any]) -> dict[str, Any]:
    """Worker: write a Qwen2.5-shaped model with random weights and fastmath's tiny tokenizer.

    No hub: the published config numbers are enough to measure speed and memory, and the model
    directory loads through fastmath's own loader exactly like a downloaded one. The tokenizer's
    vocabulary (2,048) is smaller than the model's; token ids beyond it are simply never fed in.
    The record is written last, so a build killed half way is redone by the next run.
    """
    import torch

    from fastmath.tiny import build_tiny_model, build_tokenizer

    shape, path = spec["shape"], Path(spec["path"])
    start = time.perf_counter()
    if shape == "tiny":
        build_tiny_model(path)
        dtype = "float32"
    else:
        from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

        tokenizer = build_tokenizer()
        eos, pad = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
        config = Qwen2Config(**QWEN25, **SHAPES[shape], bos_token_id=pad, eos_token_id=eos, pad_token_id=pad)
        torch.manual_seed(0)
        # Initialised in bfloat16 on the GPU when there is one: seconds, not minutes of CPU init for 7.6B weights.
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            model = Qwen2ForCausalLM._from_config(config, dtype=torch.bfloat16)
        model.generation_config = GenerationConfig(eos_token_id=[eos, pad], pad_token_id=pad, do_sample=False)
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        dtype = "bfloat16"
        del model
    record = {
        "shape": shape,
        "parameters": _count_parameters(path),
        "dtype_on_disk": dtype,
        "config": {k: v for k, v in json.loads((path / "config.json").read_text()).items() if k in _CONFIG_KEYS},
        "tokenizer": "fastmath.tiny.build_tokenizer (byte-level BPE, 2,048 tokens, Qwen chat template)",
        "weights": "random (seed 0)",
        "built": now(),
        "build_s": round(time.perf_counter() - start, 1),
    }
    atomic_write_json(path / MODEL_MARKER, record)
    return record


_CONFIG_KEYS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
    "tie_word_embeddings",
    "max_position_embeddings",
    "rope_parameters",
)


def _count_parameters(path: Path) -> int:
    """Parameters stored in the safetensors files (headers only: nothing is loaded)."""
    from safetensors import safe_open

    total = 0
    for file in path.glob("*.safetensors"):
        with safe_open(file, "pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                total += math.prod(f.get_slice(name).get_shape())
    return total


# --- worker processes -----------------------------------------------------------------------

_BOOT = "import sys; from bench.common import worker_main; sys.exit(worker_main(sys.argv[1]))"


def run_worker(task: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Call `task` ("module:function") with `spec` in a fresh Python process and return its result dict.

    The worker's output goes straight to ours (progress bars, warnings). A worker that fails (out
    of memory, a missing package) gives {"error": ...}, so the other side of a comparison still
    gets reported.
    """
    with tempfile.TemporaryDirectory(prefix="fastmath-bench-") as tmp:
        job, result = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job.write_text(json.dumps({"task": task, "spec": spec, "result": str(result)}), encoding="utf-8")
        path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(REPO)) if p)
        env = {**os.environ, "PYTHONPATH": path, "TOKENIZERS_PARALLELISM": "false"}
        sys.stdout.flush()
        proc = subprocess.run([sys.executable, "-c", _BOOT, str(job)], env=env)
        if result.is_file():
            return json.loads(result.read_text(encoding="utf-8"))
        return {"error": f"{task} exited with status {proc.returncode} without a result (its output is above)"}


def worker_main(job_file: str) -> int:
    """The worker side of `run_worker`: run the task, write its result (or its error) as JSON."""
    job = json.loads(Path(job_file).read_text(encoding="utf-8"))
    module, _, function = job["task"].partition(":")
    try:
        result = getattr(importlib.import_module(module), function)(job["spec"])
    except Exception as e:  # reported in the results, so one failed side does not lose the other
        traceback.print_exc()
        atomic_write_json(job["result"], {"error": f"{type(e).__name__}: {str(e)[:500]}"})
        return 1
    atomic_write_json(job["result"], result)
    return 0


# --- training runs ------------------------------------------------------------------------


def add_training_args(parser: argparse.ArgumentParser, steps: int) -> None:
    """The options both scripts' training runs take, with the same names and defaults."""
    parser.add_argument("--data", type=Path, default=gsm8k("train"), help="GSM8K-format training file")
    parser.add_argument("--problems", type=int, default=256, help="first N training problems (default 256)")
    parser.add_argument("--steps", type=int, default=steps, help=f"optimizer steps per run (default {steps})")
    parser.add_argument("--batch-size", type=int, default=8, help="examples (packed: rows) per step (default 8)")
    parser.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps (default 1)")
    parser.add_argument(
        "--warmup-steps",
        type=int,
        default=2,
        help="steps left out of the steady-state tokens/s: they pay one-off costs (kernel compilation, "
        "allocator growth) that would dominate a short run (default 2)",
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON result goes")
    parser.add_argument("--docs", type=Path, default=DOCS, help="markdown table rewritten from --results-dir")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides for every run")


def training_overrides(
    args: argparse.Namespace, model: Path, output_dir: Path, steps: int | None = None, stage: str = "sft"
) -> dict[str, Any]:
    """Recipe overrides every run of a comparison shares: model, data, the stage's schedule, per-step logging."""
    from fastmath.cli import parse_overrides
    from fastmath.config import schedule_section

    schedule = schedule_section(stage)
    return {
        "model.name": str(model),
        "data.train": str(args.data.resolve()),
        "data.limit": args.problems,
        f"{schedule}.max_steps": steps or args.steps,
        f"{schedule}.batch_size": args.batch_size,
        "training.gradient_accumulation_steps": args.grad_accum,
        "training.logging_steps": 1,  # every step timed
        "training.save_steps": 1_000_000,  # no checkpoints inside the timed steps
        "training.report_to": "none",
        "training.output_dir": str(output_dir),
        **parse_overrides(args.overrides),
    }


def check_recipe(recipe: Path, overrides: dict[str, Any]) -> None:
    """Fail in seconds, before any worker starts, on a bad recipe key or value."""
    from fastmath.config import load_recipe
    from fastmath.errors import FastmathError

    try:
        load_recipe(recipe, overrides)
    except FastmathError as e:
        raise SystemExit(f"error: {e}") from None


def pick_backend(wanted: str) -> tuple[str, str | None]:
    """`wanted`, or hf and the reason when Unsloth cannot run here (on a CPU it runs its CPU backend)."""
    if wanted == "unsloth" and importlib.util.find_spec("unsloth") is None:
        return "hf", "Unsloth was not run: it is not installed; this side ran on the hf backend"
    return wanted, None


def make_clock(warmup_steps: int):
    """A TrainerCallback that timestamps each logged step (TRL logs running non-pad `num_tokens`).

    Built on demand because transformers may only be imported after `models.activate`.
    """
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.marks: list[tuple[int, float, float]] = []  # (step, time, non-pad tokens so far)
            self.first: dict[str, float] = {}  # the first logged step: losses of the untouched model

        def on_log(self, args, state, control, logs=None, **kwargs):
            # logging .item()s the loss first, so on CUDA the clock reads after the step really ended
            if not logs or "loss" not in logs or "num_tokens" not in logs:
                return
            if not self.first:
                self.first = {k: v for k, v in logs.items() if isinstance(v, (int, float))}
            self.marks.append((state.global_step, time.perf_counter(), logs["num_tokens"]))

        def steady(self) -> dict[str, Any]:
            after = [m for m in self.marks if m[0] >= max(1, warmup_steps)]
            if len(after) < 2:
                return {}
            (s0, t0, n0), (s1, t1, n1) = after[0], after[-1]
            steps = f"step {s1}" if s1 == s0 + 1 else f"steps {s0 + 1}-{s1}"
            return {"tokens_per_s": round((n1 - n0) / (t1 - t0), 1), "basis": f"{steps} (after {s0} warm-up)"}

    return StepClock()


def train_task(spec: dict[str, Any]) -> dict[str, Any]:
    """Worker: one real `run_sft` / `run_dpo` with the spec's recipe, and the figures a comparison needs."""
    from fastmath import cli
    from fastmath.models import ready_backend, use_4bit

    overrides, note = dict(spec["overrides"]), None
    if spec.get("backend"):  # else the recipe's model.backend decides, as in `python -m fastmath sft`
        overrides["model.backend"], note = pick_backend(spec["backend"])
    inv = cli.invocation(spec["stage"], str(spec["recipe"]), overrides)  # as the command line resolves it
    recipe = inv.recipe
    backend = ready_backend(recipe.model)
    import torch

    clock = make_clock(spec["warmup_steps"])
    if spec["stage"] == "dpo":
        from fastmath.train.dpo import run_dpo

        run_dir = run_dpo(recipe, inv.parent, backend, callbacks=(clock,))
    else:
        from fastmath.train.sft import run_sft

        run_dir = run_sft(recipe, backend, callbacks=(clock,))

    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    steady = clock.steady()
    dpo = spec["stage"] == "dpo"
    return {
        "backend": backend,
        "note": note,
        "batching": "padded (DPO)" if dpo else summary["batching"],  # as asked (`auto` resolved)
        "batching_seen": summary["batching_seen"],  # as the batches were
        "changed_by_backend": summary["changed_by_backend"],
        "load_in_4bit": use_4bit(recipe.model),
        "dtype": summary["dtype"],  # as loaded
        "attn_implementation": recipe.model.attn_implementation,
        "gradient_checkpointing": recipe.training.gradient_checkpointing,
        "batch_size": recipe.dpo.batch_size if dpo else recipe.training.batch_size,
        "gradient_accumulation_steps": recipe.training.gradient_accumulation_steps,
        "steps": summary["steps"],
        "tokens": summary["tokens"],
        "trained_tokens": summary["trained_tokens"],
        "pad_fraction": summary["pad_fraction"],
        "tokens_per_s": steady.get("tokens_per_s", summary["tokens_per_s"]),
        "tokens_per_s_basis": steady.get("basis", "whole run (too few steps for a steady state)"),
        "run_tokens_per_s": summary["tokens_per_s"],
        "wall_time_s": summary["wall_time_s"],
        "peak_memory_gb": summary["peak_memory_gb"],
        "peak_memory_kind": summary["peak_memory_kind"],
        "peak_reserved_gb": round(torch.cuda.max_memory_reserved() / 2**30, 3) if torch.cuda.is_available() else None,
        "first_loss": clock.first.get("loss"),
        "first_logs": {k: v for k, v in clock.first.items() if k in ("loss", "logps/chosen", "logps/rejected")},
        "final_loss": summary["final_loss"],
        "run_dir": str(run_dir),
        "load_average": load_average(),
        "device": device_info(),
    }


# --- figures ------------------------------------------------------------------------------


def tidy_side(figures: dict[str, Any]) -> dict[str, Any]:
    """A worker's figures as a result file keeps them: without its temp run dir and the device (recorded once)."""
    return {k: v for k, v in figures.items() if k not in ("run_dir", "device")}


def synchronize() -> None:
    """Wait for queued CUDA work, so a wall-clock time covers it (a no-op on CPU)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def load_average() -> list[float] | None:
    """The machine's 1- and 5-minute load averages: how much else was running while we measured."""
    with contextlib.suppress(OSError, AttributeError):
        return [round(x, 2) for x in os.getloadavg()[:2]]
    return None


def contention_note(device: dict[str, Any], runs: list[dict[str, Any]]) -> str | None:
    """A warning when other processes shared the CPU: runs measured minutes apart then saw different machines."""
    loads = [r["load_average"][0] for r in runs if r.get("load_average")]
    cores = device.get("cores") or 1
    if device.get("kind") != "cpu" or not loads or max(loads) <= cores + 1:  # +1: the measured run itself
        return None
    return (
        f"the CPU was shared while measuring (1-minute load average {min(loads):.1f} to {max(loads):.1f} on "
        f"{cores} cores): speed ratios between these runs are mostly noise"
    )


def ratio(numerator: float | None, denominator: float | None, digits: int = 3) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, digits)


def relative_diff(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return abs(a - b) / abs(b)


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: numbers rounded for reading, None as a dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A markdown table (readable as plain text too)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_result(path: Path, result: dict[str, Any]) -> None:
    atomic_write_json(path, result)
    print(f"wrote {shown(path)}")


# --- docs/benchmarks.md -------------------------------------------------------------------

DOCS_HEAD = """\
# Benchmarks

Generated by `python -m bench.common` (the bench scripts run it too) from the JSON files in
`bench/results/`; each file also records the exact command, the date, the library versions and the
git commit. Edit the text in `bench/common.py`, not here.

How to read the figures:

- **Speed and memory are ratios measured side by side in one run**: the configurations being compared
  run one after the other, each in a fresh process, on the same data, model and steps.
- **tokens/s** counts non-pad tokens (what the model learns from), over the steps after the warm-up
  steps; `pad` is the share of computed positions that were padding.
- **peak memory** is torch's peak allocated CUDA memory on a GPU, the process's peak resident set on CPU.
- **CPU rows are smoke tests** on a tiny random model (hidden 128, 2 layers): they show the scripts and
  the code paths work and how batching changes the work done, not how fast anything is on a GPU.
- Models are built from published Qwen2.5 config numbers with **random weights** and fastmath's tiny
  tokenizer (no hub download). Speed and memory depend on the shapes, not the weights, but a random
  model never ends its answer, so in *eval* every answer runs to `max_new_tokens`; and the tiny
  tokenizer splits GSM8K text into more tokens than Qwen's.

## Reproduce

On any machine (CPU smoke tests, minutes):

```bash
python bench/sft_throughput.py                      # padded vs padding-free vs packed (issue #2)
python bench/backend_throughput.py                  # hf vs Unsloth, 16-bit vs 4-bit, tiny SFT (issues #11, #20)
python bench/gpu_compare.py                         # fast path vs baseline, tiny model (issue #6)
python bench/engine_throughput.py                   # HF vs vLLM generation, tiny + 0.5B-shaped (issue #21)
```

On a lent GPU, one command runs the QLoRA user path (`make sft`, `make pairs`, `make dpo`, `make grpo`,
`make eval`, `fastmath solve`, `make export` merged and GGUF, on a 1.5B-shaped model, Unsloth, 4-bit)
and then the 7B comparison below, within 9 minutes (the comparison gets what the chain leaves), returning
its summaries, logs and JSON in `$OUT` (`SHAPE=tiny COMPARE=none` runs the same path on a CPU, 4-bit too).
Its last step, the 7B recipe's GSM8K greedy CoT eval through vLLM on all 1,319 test problems (issue #21),
gets what the others leave; alone, in one command: `SHAPE=none COMPARE=none ENGINE_EVAL=7b bash
bench/gpu_smoke.sh` (it needs vLLM's CUDA build on the GPU machine, which `.gpu-site` does not carry;
not run yet):

```bash
bash ../shared/device/gpu-bundle.sh .gpu-site && mkdir -p .gpu-data && cp -r ../shared/data/gsm8k .gpu-data/
# device command, carrying [".gpu-site", ".gpu-data"]:
export PYTHONPATH=$PWD/.gpu-site:$PWD HF_HUB_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1; bash bench/gpu_smoke.sh
```

On the lent GPU (the H100 figures below are pending until a GPU session runs this). The GPU machine
sees only the repository, so the GPU-only packages and the data travel with each run:

```bash
# here, once: a slim site-packages of the unsloth/trl/datasets/bitsandbytes/xformers wheels (it pins
# trl 1.14.2 and datasets 4.8.5, the versions in requirements.txt), and GSM8K in a git-ignored folder
bash ../shared/device/gpu-bundle.sh .gpu-site
mkdir -p .gpu-data && cp -r ../shared/data/gsm8k .gpu-data/
```

Then one device command per part, each carrying `[".gpu-site", ".gpu-data"]` (a command may run 10
minutes at most; the first also builds the 7B model, 15 GB in bfloat16, into `bench/.work/`, which
later commands reuse while the machine stays warm; the SFT adapter the DPO and eval parts continue
from is kept there too):

```bash
export PYTHONPATH=$PWD/.gpu-site:$PWD HF_HUB_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1
python bench/gpu_compare.py --shape 7b --parts sft;  cp bench/results/gpu_compare-*-7b.json "$OUT"/
python bench/gpu_compare.py --shape 7b --parts dpo;  cp bench/results/gpu_compare-*-7b.json "$OUT"/
python bench/gpu_compare.py --shape 7b --parts eval; cp bench/results/gpu_compare-*-7b.json "$OUT"/
```

(All at once, where time allows: `python bench/gpu_compare.py --shape 7b --parts sft,dpo,eval`.)
Each part is merged into the same JSON file: copy the returned file into `bench/results/` before the
next command, so that it travels with the working tree and the next part merges into it; at the end,
`python -m bench.common` here rewrites this page. `--shape 1.5b` is a quicker check of the same path.
"""


def render_docs(results_dir: Path = RESULTS_DIR) -> str:
    """docs/benchmarks.md: the fixed text above, then one table per result file."""
    results = []
    for path in sorted(results_dir.glob("*.json")):
        with contextlib.suppress(json.JSONDecodeError, OSError):
            results.append((path, json.loads(path.read_text(encoding="utf-8"))))
    parts = [DOCS_HEAD, _gpu_compare_docs([r for r in results if r[1].get("bench") == "gpu_compare"])]
    parts.append(_sft_throughput_docs([r for r in results if r[1].get("bench") == "sft_throughput"]))
    others = [r for r in results if r[1].get("bench") not in ("gpu_compare", "sft_throughput")]
    if others:
        parts.append("## Other benchmarks\n\nTheir scripts' own figures, as recorded in their JSON files.\n")
        parts += [_generic_docs(path, result) for path, result in others]
    return "\n".join(parts)


def write_docs(results_dir: Path = RESULTS_DIR, path: Path = DOCS) -> None:
    atomic_write_text(path, render_docs(results_dir))
    print(f"wrote {shown(path)}")


def _title(path: Path, result: dict[str, Any]) -> str:
    device = result.get("device", {})
    if not isinstance(device, dict):  # a script that records only a device label
        return f"### {device}: `{shown(path)}`"
    return f"### {device.get('name', '?')} ({device.get('kind', '?')}): `{shown(path)}`"


def _generic_docs(path: Path, result: dict[str, Any]) -> str:
    """A result this module has no layout for: its scalar figures, then any {row: {figure: value}} table."""
    scalar = (int, float, str, bool)
    skip = ("bench", "date", "command")
    out = [
        _title(path, result) + "\n",
        f"`{result.get('bench', '?')}`, {result.get('date', '?')}: `{result.get('command', '?')}`\n",
    ]
    out.append(
        table(["figure", "value"], [[k, v] for k, v in result.items() if isinstance(v, scalar) and k not in skip])
    )
    for name, rows in result.items():
        if isinstance(rows, dict) and rows and all(isinstance(r, dict) for r in rows.values()):
            columns = list(dict.fromkeys(k for r in rows.values() for k, v in r.items() if isinstance(v, scalar)))
            if columns:
                out += [
                    "",
                    f"{name}:",
                    "",
                    table(["", *columns], [[row, *(r.get(c) for c in columns)] for row, r in rows.items()]),
                ]
    return "\n".join([*out, ""])


def _gpu_compare_docs(results: list[tuple[Path, dict[str, Any]]]) -> str:
    out = [
        "## Fast path vs baseline (`bench/gpu_compare.py`, issue #6)\n",
        "Targets, on an H100 for Qwen2.5-7B QLoRA r=16, GSM8K, sequences ≤ 1024: SFT ≥ 3× the baseline's "
        "tokens/s and ≥ 8,000 non-pad tokens/s with peak VRAM ≤ 10 GB at batch 8; DPO ≥ 2× the baseline; "
        "eval ≥ 15× one-at-a-time `generate` and the full GSM8K test (1,319 problems) in ≤ 120 s. "
        "The baseline is transformers + PEFT + bitsandbytes 4-bit, SDPA attention, padded batches and "
        "gradient checkpointing; the fast side is the project's recipe on the Unsloth backend.\n",
    ]
    if not any(r.get("device", {}).get("kind") == "cuda" and r.get("shape") == "7b" for _, r in results):
        out.append(
            "**H100, Qwen2.5-7B: pending.** No GPU session has run "
            "`python bench/gpu_compare.py --shape 7b --parts sft,dpo,eval` yet (commands above).\n"
        )
    for path, result in results:
        model = result.get("model", {})
        out.append(_title(path, result) + "\n")
        out.append(
            f"Model: {model.get('shape', '?')}, {fmt(model.get('parameters'))} parameters, "
            f"{model.get('weights', 'weights as given')}. Last run {result.get('date', '?')}.\n"
        )
        for name, part in result.get("parts", {}).items():
            if "skipped" in part:
                out.append(f"**{name}** ({part.get('date', '?')}): skipped — {part['skipped']}\n")
                continue
            out += [f"**{name}** ({part.get('date', '?')})\n", part_table(name, part), "", targets_table(part), ""]
            out += [f"- {note}" for note in part.get("notes", [])]
            out.append("")
    return "\n".join(out)


def part_table(name: str, part: dict[str, Any]) -> str:
    """One gpu_compare part: its two sides, then the speed-up (and parity, for training)."""
    sides = [(s, part.get(s, {})) for s in ("fast", "baseline")]
    if name == "eval":
        headers = ["side", "engine", "backend", "problems", "problems/s", "new tokens/problem", "full test s (proj.)"]
        rows = [
            [s, d.get("engine"), d.get("backend"), d.get("problems"), d.get("problems_per_s")]
            + [d.get("tokens_per_problem"), d.get("projected_full_test_s")]
            for s, d in sides
        ]
        summary = f"Speed-up: **{fmt(part.get('speedup'))}×** problems/s."
    else:
        headers = ["side", "backend", "batching", "4-bit", "grad. ckpt", "non-pad tok/s", "pad", "peak mem GB"]
        headers.append("first loss")
        rows = [
            [s, d.get("backend"), d.get("batching"), d.get("load_in_4bit"), d.get("gradient_checkpointing")]
            + [d.get("tokens_per_s"), d.get("pad_fraction"), d.get("peak_memory_gb"), d.get("first_loss")]
            for s, d in sides
        ]
        parity = part.get("parity", {})
        summary = (
            f"Speed-up: **{fmt(part.get('speedup'))}×** non-pad tokens/s; peak memory "
            f"{fmt(part.get('memory_ratio'))}× the baseline's. Parity, `{parity.get('key')}` at the first step: "
            f"{fmt(parity.get('fast'), 6)} vs {fmt(parity.get('baseline'), 6)} "
            f"(relative difference {fmt(parity.get('relative_diff'), 2)}); "
            f"same tokens computed and trained on: {fmt(parity.get('same_tokens'))}."
        )
    errors = [f"{s} side failed: {d['error']}" for s, d in sides if "error" in d]
    return "\n".join([table(headers, rows), "", summary, *errors])


def targets_table(part: dict[str, Any]) -> str:
    rows = [
        [t["name"], t["wanted"], t["value"], t["met"] if t["applies"] else "n/a: not 7B + Unsloth on a GPU"]
        for t in part.get("targets", [])
    ]
    return table(["target", "wanted", "measured", "met"], rows) if rows else ""


def _sft_throughput_docs(results: list[tuple[Path, dict[str, Any]]]) -> str:
    out = [
        "## SFT batching (`bench/sft_throughput.py`, issue #2)\n",
        "The project's `run_sft` on the same GSM8K problems, recipe and steps; only `training.batching` differs. "
        "`packed` rows are `max_seq_length` long, so a packed step holds several times the tokens of the others.\n",
        "Why padding-free can lose on the hf backend: with SDPA attention (the recipes' `attn_implementation`), a "
        "padding-free or packed row is one long sequence with a block-diagonal mask, and SDPA computes the whole "
        "masked square, so attention work grows with the square of the row's length instead of each example's. "
        "Varlen kernels (flash-attention 2, Unsloth's) skip the masked blocks. On the tiny model attention is a "
        "large share of the work, so on CPU this outweighs the padding saved; on a 7B model the linear layers are "
        "most of the work, so the padding saved should count for more (not measured yet).\n",
    ]
    for path, result in results:
        s, model = result.get("settings", {}), result.get("model", {})
        basis = next(
            (d["tokens_per_s_basis"] for d in result.get("modes", {}).values() if "tokens_per_s_basis" in d), "?"
        )
        out.append(_title(path, result) + "\n")
        out.append(
            f"{result.get('date', '?')}: {fmt(s.get('steps'))} steps × batch {fmt(s.get('batch_size'))} on "
            f"{fmt(s.get('problems'))} problems, tokens/s over {basis}; model: {model.get('shape', '?')}, "
            f"{fmt(model.get('parameters'))} parameters. `{result.get('command', '?')}`\n"
        )
        out += [throughput_table(result), "", *[f"- {note}" for note in result.get("notes", [])], ""]
    return "\n".join(out)


def throughput_table(result: dict[str, Any]) -> str:
    """sft_throughput's modes side by side, with each one's ratios to padded."""
    headers = ["batching", "backend", "non-pad tok/s", "pad", "peak mem GB", "first loss", "tok/s ÷ padded"]
    headers.append("mem ÷ padded")
    rows = []
    for mode, d in result.get("modes", {}).items():
        r = result.get("ratios", {}).get(f"{mode}/padded", {})
        rows.append(
            [mode, d.get("backend"), d.get("tokens_per_s"), d.get("pad_fraction"), d.get("peak_memory_gb")]
            + [d.get("first_loss"), r.get("tokens_per_s"), r.get("peak_memory")]
        )
    errors = [f"{mode} failed: {d['error']}" for mode, d in result.get("modes", {}).items() if "error" in d]
    return "\n".join([table(headers, rows), *errors])


if __name__ == "__main__":
    write_docs()
