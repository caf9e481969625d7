"""Issue #6: the fast path (Unsloth) against a plain transformers + PEFT baseline: same model, data and batch.

    python bench/gpu_compare.py                                    # CPU smoke test on the tiny model
    python bench/gpu_compare.py --shape 7b --parts sft,dpo,eval    # the H100 run (docs/benchmarks.md)

The model is Qwen2.5-shaped (--shape) with random weights, built once into --work-dir and loaded
through fastmath's own loader. Each part runs its two sides one after the other, each in a fresh
process (Unsloth patches transformers for the whole process that imports it):

  sft   N steps of the project's SFT recipe. fast: the Unsloth backend with the recipe's batching
        (padding-free). baseline: transformers + PEFT + bitsandbytes 4-bit, SDPA attention, padded
        batches, gradient checkpointing. Same problems, seed and batch, and LoRA B starts at 0, so
        both first logged losses are the base model's loss on the same first batch: loss parity.
  dpo   the same comparison for DPO steps; both sides continue this run's SFT adapter, on pairs
        built from GSM8K (chosen: the reference solution; rejected: the same with a wrong answer).
  eval  problems/s of fastmath.generation's batched engine against one-at-a-time `model.generate`
        on the plain stack, and the projected wall time of the full 1,319-problem GSM8K test.

Without CUDA the fast side cannot be Unsloth: it runs on hf (padding-free), and the JSON says so.
Writes bench/results/gpu_compare-<device>-<shape>.json (parts are merged into an existing file, so
they may run as separate commands) and rewrites docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/gpu_compare.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common, eval_throughput  # noqa: E402

PARTS = ("sft", "dpo", "eval")
# What each part needs from the project: (module, function).
NEEDS = {
    "sft": ("fastmath.train.sft", "run_sft"),
    "dpo": ("fastmath.train.dpo", "run_dpo"),
    "eval": ("fastmath.generation", "generate"),
}
# The plain stack the fast path is measured against (recipe keys that win over the recipe and the command line).
# What `training.batching: auto` picks on Unsloth; said outright so the CPU fallback keeps it.
FAST = {"training.batching": "padding_free"}
BASELINE = {
    "model.backend": "hf",
    "model.load_in_4bit": True,  # bitsandbytes 4-bit, on CUDA and on its CPU backend alike
    "model.attn_implementation": "sdpa",
    "training.batching": "padded",
    "training.gradient_checkpointing": True,
}


@dataclass(frozen=True)
class Target:
    """An issue #6 target, for Qwen2.5-7B QLoRA r=16 on an H100."""

    name: str
    wanted: str
    side: str | None  # where the measured value is: part[side][key], or part[key] when None
    key: str
    bound: float
    at_most: bool = False
    batch_size: int | None = None  # the target is stated at this batch size


TARGETS = {
    "sft": [
        Target("SFT tokens/s vs baseline", "≥ 3×", None, "speedup", 3.0),
        Target("SFT non-pad tokens/s", "≥ 8,000", "fast", "tokens_per_s", 8000),
        Target("SFT peak VRAM at batch 8 (GB)", "≤ 10", "fast", "peak_memory_gb", 10, at_most=True, batch_size=8),
    ],
    "dpo": [Target("DPO tokens/s vs baseline", "≥ 2×", None, "speedup", 2.0)],
    "eval": [
        Target("eval problems/s vs one-at-a-time", "≥ 15×", None, "speedup", 15.0),
        Target("full GSM8K test, projected (s)", "≤ 120", "fast", "projected_full_test_s", 120, at_most=True),
    ],
}


@dataclass
class Context:
    """What every part of one invocation shares."""

    args: argparse.Namespace
    model: Path
    label: str  # the shape, or the --model directory's name
    runs: Path  # this invocation's run directories
    device: dict[str, Any]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--shape", choices=common.ALL_SHAPES, default="tiny", help="model shape (default tiny)")
    parser.add_argument("--model", type=Path, help="a model directory to use instead of building --shape's")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"what to compare (default {','.join(PARTS)})")
    parser.add_argument("--fast", choices=("unsloth", "hf"), default="unsloth", help="fast side's backend")
    parser.add_argument("--work-dir", type=Path, default=common.REPO / "bench" / ".work", help="models and runs")
    parser.add_argument("--recipe", type=Path, default=common.SFT_RECIPE, help="SFT recipe (default: the 7B one)")
    parser.add_argument("--dpo-recipe", type=Path, default=common.DPO_RECIPE, help="DPO recipe (default: the 7B one)")
    common.add_training_args(parser, steps=20)
    parser.add_argument("--dpo-steps", type=int, default=8, help="DPO optimizer steps per side (default 8)")
    parser.add_argument("--dpo-batch-size", type=int, default=4, help="pairs per DPO step (default 4 = 8 sequences)")
    parser.add_argument("--test-data", type=Path, default=common.gsm8k("test"), help="GSM8K-format test file")
    parser.add_argument("--eval-problems", type=int, default=256, help="problems for the batched engine (256)")
    parser.add_argument(
        "--sequential-problems",
        type=int,
        default=16,
        help="problems for one-at-a-time generate, whose rate is per problem (default 16: it is the slow side)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=256, help="eval answer length cap (default 256)")
    parser.add_argument("--eval-batch-size", type=int, help="batched engine's batch (default: its automatic one)")
    args = parser.parse_args(argv)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not parts or parts - set(PARTS):
        parser.error(f"--parts: choose from {', '.join(PARTS)}")
    args.parts = [p for p in PARTS if p in parts]  # sft first: dpo and eval use its adapter
    return args


def missing(part: str) -> str | None:
    """Why `part` cannot run yet (its fastmath module or function is not written), else None."""
    module, function = NEEDS[part]
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return f"{module} does not exist yet"
    if f"def {function}(" not in Path(spec.origin).read_text(encoding="utf-8"):
        return f"{module} has no {function}() yet"
    return None


# --- training parts -------------------------------------------------------------------------


def compare_training(ctx: Context, stage: str, recipe: Path, shared: dict[str, Any], parity: str) -> dict[str, Any]:
    """Run the fast side, then the baseline, on the same overrides; their figures and ratios."""
    common.check_recipe(recipe, {**shared, **BASELINE})
    sides = {}
    for side, backend, extra in (("fast", ctx.args.fast, FAST), ("baseline", "hf", BASELINE)):
        print(f"\n=== {stage}: {side} side ===", flush=True)
        spec = {
            "stage": stage,
            "recipe": str(recipe),
            "overrides": {**shared, **extra, "training.run_name": f"{stage}-{side}"},
            "backend": backend,
            "warmup_steps": ctx.args.warmup_steps,
        }
        sides[side] = tidy(common.run_worker("bench.common:train_task", spec))
    fast, baseline = sides["fast"], sides["baseline"]
    first = (fast.get("first_logs", {}).get(parity), baseline.get("first_logs", {}).get(parity))
    counts = [(side.get("tokens"), side.get("trained_tokens")) for side in (fast, baseline)]
    return {
        **sides,
        "speedup": common.ratio(fast.get("tokens_per_s"), baseline.get("tokens_per_s")),
        "memory_ratio": common.ratio(fast.get("peak_memory_gb"), baseline.get("peak_memory_gb")),
        "parity": {
            "key": parity,
            "fast": first[0],
            "baseline": first[1],
            "relative_diff": common.relative_diff(*first),
            # The same examples and the same trained tokens: a loss over other tokens would show here.
            "same_tokens": None not in counts[0] and counts[0] == counts[1],
        },
    }


def sft_part(ctx: Context) -> dict[str, Any]:
    shared = common.training_overrides(ctx.args, ctx.model, ctx.runs)
    return compare_training(ctx, "sft", ctx.args.recipe, shared, parity="loss")


def dpo_part(ctx: Context) -> dict[str, Any]:
    """DPO steps on both sides, continuing the same SFT adapter (DPO's reference is that adapter)."""
    sft_run = find_sft_run(ctx)
    if sft_run is None:
        return {"skipped": "DPO continues an SFT adapter: run --parts sft first (same --work-dir)"}
    pairs = write_pairs(ctx.args.data, ctx.args.problems, ctx.runs / "pairs.jsonl")
    shared = {
        **common.training_overrides(ctx.args, ctx.model, ctx.runs, steps=ctx.args.dpo_steps, stage="dpo"),
        "dpo.sft_run": str(sft_run),
        "dpo.pairs": str(pairs),
        "dpo.batch_size": ctx.args.dpo_batch_size,
    }
    # At the first step the policy equals its reference, so the loss is log 2 on both sides whatever
    # they compute; the log-probabilities of the chosen answers are the figure that must agree.
    part = compare_training(ctx, "dpo", ctx.args.dpo_recipe, shared, parity="logps/chosen")
    return {"sft_adapter": common.shown(sft_run), "pairs": PAIRS_NOTE, **part}


PAIRS_NOTE = "built from GSM8K train: chosen = the reference solution, rejected = the same with a wrong final answer"


def write_pairs(data: Path, limit: int, path: Path) -> Path:
    """Preference pairs of realistic length for timing; mined pairs would need a trained model's samples."""
    from fastmath.data import load_problems
    from fastmath.grading import final_answer_line
    from fastmath.io import atomic_write_jsonl

    rows = []
    for p in load_problems(str(data), limit=limit, verbose=False):
        chosen = p.target()
        steps = chosen.rsplit("\n", 1)[0] + "\n" if "\n" in chosen else ""
        rows.append(
            {"prompt": p.question, "chosen": chosen, "rejected": steps + final_answer_line(wrong(p.gold), p.lang)}
        )
    atomic_write_jsonl(path, rows)
    return path


def wrong(gold: str) -> str:
    try:
        return str(Decimal(gold) + 1)
    except InvalidOperation:
        return gold + "0"


def find_sft_run(ctx: Context) -> Path | None:
    """This invocation's SFT adapter (fast side first), else the newest one an earlier invocation left."""
    runs = sorted((ctx.args.work_dir / "runs").glob(f"{ctx.label}-*"), reverse=True)
    for folder in [ctx.runs, *runs]:
        for side in ("fast", "baseline"):
            run = folder / f"sft-{side}"
            if (run / "summary.json").is_file() and (run / "adapter_config.json").is_file():
                return run
    return None


# --- eval part ----------------------------------------------------------------------------


def eval_part(ctx: Context) -> dict[str, Any]:
    """The batched engine on --eval-problems, one-at-a-time generate on --sequential-problems."""
    from fastmath.cli import parse_overrides

    a = ctx.args
    adapter = find_sft_run(ctx)  # a fine-tuned model, as `fastmath eval` sees one (base model if none)
    model = {"model.name": str(ctx.model), **parse_overrides(a.overrides)}
    common.check_recipe(a.recipe, {**model, **BASELINE})
    shared = {
        "recipe": str(a.recipe),
        "adapter": str(adapter) if adapter else None,
        "data": str(a.test_data.resolve()),
        "max_new_tokens": a.max_new_tokens,
    }
    sides = {}
    print("\n=== eval: fast side (batched engine) ===", flush=True)
    sides["fast"] = common.run_worker(
        "bench.gpu_compare:batched_eval_task",
        {**shared, "overrides": model, "backend": a.fast, "problems": a.eval_problems, "batch_size": a.eval_batch_size},
    )
    print("\n=== eval: baseline side (one at a time) ===", flush=True)
    sides["baseline"] = common.run_worker(
        "bench.gpu_compare:sequential_eval_task",
        {**shared, "overrides": {**model, **BASELINE}, "backend": "hf", "problems": a.sequential_problems},
    )
    fast, baseline = tidy(sides["fast"]), tidy(sides["baseline"])
    return {
        "adapter": common.shown(adapter) if adapter else None,
        "fast": fast,
        "baseline": baseline,
        "speedup": common.ratio(fast.get("problems_per_s"), baseline.get("problems_per_s"), digits=2),
    }


def _load_for_eval(spec: dict[str, Any]):
    """Model (+ the SFT adapter), tokenizer and the rendered prompts, as `fastmath eval` would have them."""
    from fastmath import runs
    from fastmath.config import load_recipe
    from fastmath.data import load_problems

    recipe = load_recipe(spec["recipe"], spec["overrides"])
    if spec["adapter"]:  # the adapter's own base model and load settings, as `fastmath eval` takes them
        recipe.model = runs.model_settings(Path(spec["adapter"]))
    backend, note = common.pick_backend(spec["backend"])
    from fastmath.models import activate, load_for_inference, use_4bit

    activate(backend)  # Unsloth first, before the model code loads
    model, tokenizer = load_for_inference(recipe.model, spec["adapter"], backend)
    from fastmath.prompts import chat_messages, prompt_text

    problems = load_problems(spec["data"], limit=spec["problems"], verbose=False)
    prompts = [prompt_text(tokenizer, chat_messages(p.question, p.lang, recipe.data.system_prompt)) for p in problems]
    info = {"backend": backend, "note": note, "load_in_4bit": use_4bit(recipe.model), "problems": len(prompts)}
    return model, tokenizer, prompts, info


def _eval_figures(info: dict[str, Any], tokens: list[int], wall: float, max_new_tokens: int) -> dict[str, Any]:
    from fastmath.train.trainer import peak_memory

    rate = len(tokens) / wall
    return {
        **info,
        "max_new_tokens": max_new_tokens,
        "wall_s": round(wall, 2),
        "problems_per_s": float(f"{rate:.4g}"),
        "tokens_per_problem": round(sum(tokens) / len(tokens), 1),
        "new_tokens_per_s": round(sum(tokens) / wall, 1),
        "stopped_early": round(sum(t < max_new_tokens for t in tokens) / len(tokens), 3),
        "projected_full_test_s": round(common.GSM8K_TEST_SIZE / rate, 1),
        **peak_memory(),
        "load_average": common.load_average(),
        "device": common.device_info(),
    }


def batched_eval_task(spec: dict[str, Any]) -> dict[str, Any]:
    """Worker: the engine's `generate` over all prompts at once (greedy), as bench/eval_throughput.py times it."""
    model, tokenizer, prompts, info = _load_for_eval(spec)
    outputs, wall = eval_throughput.batched(model, tokenizer, prompts, spec["max_new_tokens"], spec["batch_size"])
    info |= {"engine": "fastmath.generation.generate", "batch_size": spec["batch_size"] or "auto"}
    return _eval_figures(info, [tokens for _, tokens in outputs], wall, spec["max_new_tokens"])


def sequential_eval_task(spec: dict[str, Any]) -> dict[str, Any]:
    """Worker: plain `model.generate`, one prompt at a time, as bench/eval_throughput.py times it."""
    model, tokenizer, prompts, info = _load_for_eval(spec)
    outputs, wall = eval_throughput.one_at_a_time(model, tokenizer, prompts, spec["max_new_tokens"])
    info |= {"engine": "model.generate, one prompt at a time", "batch_size": 1}
    return _eval_figures(info, [tokens for _, tokens in outputs], wall, spec["max_new_tokens"])


# --- results ------------------------------------------------------------------------------


def tidy(side: dict[str, Any]) -> dict[str, Any]:
    """A side's figures for the JSON: the device goes to the top level, paths relative to the repository."""
    side = {k: v for k, v in side.items() if k != "device"}
    if side.get("run_dir"):
        side["run_dir"] = common.shown(side["run_dir"])
    return side


def check_targets(ctx: Context, name: str, part: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with its measured value; `applies` only to Qwen2.5-7B with Unsloth on a GPU."""
    on_target = ctx.device["kind"] == "cuda" and ctx.label == "7b" and part.get("fast", {}).get("backend") == "unsloth"
    rows = []
    for t in TARGETS[name]:
        value = (part.get(t.side, {}) if t.side else part).get(t.key)
        applies = on_target and (t.batch_size is None or t.batch_size == ctx.args.batch_size)
        met = None if value is None or not applies else (value <= t.bound if t.at_most else value >= t.bound)
        rows.append({"name": t.name, "wanted": t.wanted, "value": value, "met": met, "applies": applies})
    return rows


def notes(ctx: Context, name: str, part: dict[str, Any]) -> list[str]:
    """What a reader must know to read this part's figures honestly."""
    out = sorted({side["note"] for side in (part.get("fast", {}), part.get("baseline", {})) if side.get("note")})
    if name in ("sft", "dpo") and ctx.args.model is None:
        out.append(
            "random weights give about the same mean loss whatever the tokens, so loss parity catches "
            "gross differences (loss scaling, overflow, NaN); equal token counts (`same_tokens`) show that both "
            "sides computed and trained on the same tokens"
        )
    shared_cpu = common.contention_note(ctx.device, [part.get("fast", {}), part.get("baseline", {})])
    if shared_cpu:
        out.append(shared_cpu)
    if ctx.device["kind"] != "cuda":
        out.append(
            "CPU smoke test: both sides ran 4-bit on bitsandbytes' CPU backend; "
            "the figures show that the code paths run, not the H100 targets"
        )
        if part.get("fast", {}).get("backend") == "unsloth":
            out.append(
                "the fast side ran Unsloth's CPU backend, which pads its batches (it turns padding-free off: "
                "`changed_by_backend`, `batching_seen`); its speed-up is its chunked cross-entropy, not its kernels"
            )
    if part.get("fast", {}).get("backend") == "hf":
        out.append(
            {
                "sft": "both sides ran on hf: they differ only in batching (padding-free vs padded), and their "
                "first losses are the same computation, so they must agree closely",
                "dpo": "both sides ran the same hf code: their tokens/s ratio is measurement noise",
                "eval": "both sides ran on hf: the speed-up is the batching alone",
            }[name]
        )
    if name == "eval":
        a = ctx.args
        out.append(
            f"one-at-a-time rate measured on the first {a.sequential_problems} problems, the batched engine's on "
            f"{a.eval_problems}; projections are {common.GSM8K_TEST_SIZE} problems / rate"
        )
        stopped = part.get("fast", {}).get("stopped_early")
        if stopped is not None and stopped < 0.5:
            out.append(
                f"random weights: {stopped:.0%} of the answers ended before max_new_tokens={a.max_new_tokens} "
                "(a trained model stops when its answer is done), so the projection is for answers of that length"
            )
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = common.provenance()
    device = common.device_info()
    if args.model:
        model = args.model.resolve()
        label = re.sub(r"[^a-z0-9.]+", "-", model.name.lower()).strip("-")
        record: dict[str, Any] = {"shape": "custom", "path": common.shown(model)}
    else:
        model, label = common.model_dir(args.work_dir.resolve(), args.shape), args.shape
        record = {**common.ensure_model(args.shape, model), "path": common.shown(model)}
    runs = args.work_dir.resolve() / "runs" / f"{label}-{time.strftime('%Y%m%d-%H%M%S')}"
    ctx = Context(args, model, label, runs, device)

    out = args.results_dir / f"gpu_compare-{device['slug']}-{label}.json"
    result = json.loads(out.read_text(encoding="utf-8")) if out.is_file() else {}
    parts = result.get("parts", {})
    result = {"bench": "gpu_compare", "shape": label, **run, "device": device, "model": record, "parts": parts}
    run_parts = {"sft": sft_part, "dpo": dpo_part, "eval": eval_part}
    failed = False
    for name in args.parts:
        started = common.now()
        why = missing(name)
        part = {"skipped": why} if why else run_parts[name](ctx)
        if "skipped" not in part:
            part["targets"] = check_targets(ctx, name, part)
            part["notes"] = notes(ctx, name, part)
            failed |= any("error" in part.get(side, {}) for side in ("fast", "baseline"))
        parts[name] = {"date": started, "command": run["command"], **part}
        common.write_result(out, result)  # after each part: a later failure keeps what finished

    for name in args.parts:
        part = parts[name]
        print(f"\n== {name}: skipped, {part['skipped']}" if "skipped" in part else f"\n== {name}")
        if "skipped" not in part:
            print("\n\n".join([common.part_table(name, part), common.targets_table(part), *part["notes"]]))
    print()
    common.write_docs(args.results_dir, args.docs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
