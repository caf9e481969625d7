"""Issues #11, #20: tiny SFT tokens/s and peak memory, transformers + PEFT (hf) vs Unsloth, 16-bit vs
4-bit (QLoRA: bitsandbytes NF4, on CUDA or its CPU backend), side by side.

    python bench/backend_throughput.py                      # tiny model built in a temp dir, CPU: minutes
    python bench/backend_throughput.py --model DIR --steps 30 --precisions 16 lora.r=8

Each side runs the project's real `run_sft` in a fresh process (Unsloth patches the whole
process it is imported in), one after the other, with the same recipe, problems, seed, steps and
dtype (fp32 on a CPU, the 4-bit sides' compute dtype too). All train padded batches: Unsloth turns
padding-free off, so hf is asked for padded too, and the comparison is of the backends and
precisions, not of the batching. On a CPU this is the measurement `model.backend: auto` and the
tiny recipes' `model.load_in_4bit: false` follow. Writes bench/results/backend_throughput-<device>.json
and rewrites docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/backend_throughput.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402

BACKENDS = ("hf", "unsloth")
PRECISIONS = {"16": "", "4": "-4bit"}  # --precisions value -> suffix of the side's name


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--model", type=Path, help="model directory (default: build the tiny model in a temp dir)")
    parser.add_argument("--recipe", type=Path, default=common.SFT_RECIPE, help="SFT recipe (default: the 7B one)")
    parser.add_argument("--precisions", default="16,4", help="16 (unquantized base), 4 (QLoRA), or both (default)")
    common.add_training_args(parser, steps=20)
    args = parser.parse_args(argv)
    args.precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    if not args.precisions or any(p not in PRECISIONS for p in args.precisions):
        parser.error(f"--precisions: {','.join(args.precisions) or '(none)'}; choose from 16, 4")
    return args


def measure(args: argparse.Namespace, model: Path, output_dir: Path) -> dict[str, dict[str, Any]]:
    """One `run_sft` per backend and precision, each in its own process; their figures by side
    (`hf`, `unsloth`: 16-bit; `hf-4bit`, `unsloth-4bit`: QLoRA)."""
    shared = {**common.training_overrides(args, model, output_dir), "training.batching": "padded"}
    common.check_recipe(args.recipe, shared)
    results = {}
    for precision in args.precisions:
        for backend in BACKENDS:
            side = backend + PRECISIONS[precision]
            print(f"\n=== {side} ===", flush=True)
            overrides = {**shared, "model.load_in_4bit": precision == "4", "training.run_name": f"sft-{side}"}
            spec = {"stage": "sft", "recipe": str(args.recipe), "backend": backend, "warmup_steps": args.warmup_steps,
                    "overrides": overrides}  # fmt: skip
            results[side] = common.run_worker("bench.common:train_task", spec)
    return results


def compared(sides: dict[str, dict[str, Any]], a: str, b: str) -> dict[str, Any] | None:
    """Side `a` against side `b`: tokens/s and peak memory as ratios, first losses as a relative difference."""
    if a not in sides or b not in sides:
        return None
    x, y = sides[a], sides[b]
    return {
        "tokens_per_s": common.ratio(x.get("tokens_per_s"), y.get("tokens_per_s")),
        "peak_memory": common.ratio(x.get("peak_memory_gb"), y.get("peak_memory_gb")),
        "first_loss_relative_diff": common.relative_diff(x.get("first_loss"), y.get("first_loss")),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = common.provenance()
    device = common.device_info()
    with tempfile.TemporaryDirectory(prefix="backend-throughput-") as tmp:
        model, record = common.model_or_tiny(args.model, Path(tmp))
        backends = measure(args, model, Path(tmp) / "runs")

    pairs = [("unsloth", "hf"), ("hf-4bit", "hf"), ("unsloth-4bit", "unsloth"), ("unsloth-4bit", "hf-4bit")]
    ratios = {f"{a}/{b}": r for a, b in pairs if (r := compared(backends, a, b))}
    result = {
        "bench": "backend_throughput",
        **run,
        "device": device,
        "model": record,
        "settings": {
            "recipe": common.shown(args.recipe),
            "data": common.shown(args.data),
            "problems": args.problems,
            "steps": args.steps,
            "batch_size": args.batch_size,
            "batching": "padded",
            "precisions": args.precisions,
            "warmup_steps": args.warmup_steps,
            "overrides": args.overrides,
        },
        "backends": {name: common.tidy_side(d) for name, d in backends.items()},
        "ratios": ratios,
        "notes": [
            n
            for n in [common.contention_note(device, list(backends.values()))]
            + list(dict.fromkeys(d.get("note") for d in backends.values()))
            if n
        ],
    }
    for name, r in ratios.items():
        shown = f"tokens/s {common.fmt(r['tokens_per_s'])}x, peak memory {common.fmt(r['peak_memory'])}x"
        print(f"{name}: {shown}, first loss relative diff {common.fmt(r['first_loss_relative_diff'])}")
    print(*result["notes"], sep="\n")
    common.write_result(args.results_dir / f"backend_throughput-{device['slug']}.json", result)
    common.write_docs(args.results_dir, args.docs)
    return 1 if any("error" in d for d in backends.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
