"""Issue #2: non-pad tokens/s and pad fraction of padded vs padding-free vs packed SFT batches, side by side.

    python bench/sft_throughput.py                          # tiny model built in a temp dir (CPU: a minute)
    python bench/sft_throughput.py --model DIR --steps 50 lora.r=8

Each mode is the project's real `run_sft`, with the same recipe, problems, seed and steps, run one
after the other in fresh processes; only `training.batching` differs. On CUDA with a bigger model,
4-bit loading, dtype and the optimizer follow the recipe as they do in `python -m fastmath sft`.
Writes bench/results/sft_throughput-<device>.json and rewrites docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/sft_throughput.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402

MODES = ("padded", "padding_free", "packed")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--model", type=Path, help="model directory (default: build the tiny model in a temp dir)")
    parser.add_argument("--recipe", type=Path, default=common.SFT_RECIPE, help="SFT recipe (default: the 7B one)")
    parser.add_argument(
        "--modes", default=",".join(MODES), help=f"batching modes, in order (default {','.join(MODES)})"
    )
    parser.add_argument(
        "--backend",
        choices=("hf", "unsloth"),
        default="hf",
        help="backend of every mode (default hf: Unsloth's CPU backend turns padding-free and packing off)",
    )
    common.add_training_args(parser, steps=20)
    args = parser.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in args.modes if m not in MODES]
    if unknown or not args.modes:
        parser.error(f"--modes: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(MODES)}")
    return args


def measure(args: argparse.Namespace, model: Path, output_dir: Path) -> dict[str, dict[str, Any]]:
    """One `run_sft` per batching mode, each in its own process; their figures by mode."""
    shared = common.training_overrides(args, model, output_dir)
    common.check_recipe(args.recipe, shared)
    results = {}
    for mode in args.modes:
        print(f"\n=== batching={mode} ===", flush=True)
        overrides = {**shared, "training.batching": mode, "training.run_name": f"sft-{mode}"}
        spec = {"stage": "sft", "recipe": str(args.recipe), "overrides": overrides, "backend": args.backend}
        results[mode] = common.run_worker("bench.common:train_task", {**spec, "warmup_steps": args.warmup_steps})
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = common.provenance()
    device = common.device_info()
    with tempfile.TemporaryDirectory(prefix="sft-throughput-") as tmp:
        model, record = common.model_or_tiny(args.model, Path(tmp))
        modes = measure(args, model, Path(tmp) / "runs")

    padded = modes.get("padded", {})
    ratios = {
        f"{mode}/padded": {
            "tokens_per_s": common.ratio(d.get("tokens_per_s"), padded.get("tokens_per_s")),
            "peak_memory": common.ratio(d.get("peak_memory_gb"), padded.get("peak_memory_gb")),
        }
        for mode, d in modes.items()
        if mode != "padded"
    }
    result = {
        "bench": "sft_throughput",
        **run,
        "device": device,
        "model": record,
        "settings": {
            "recipe": common.shown(args.recipe),
            "data": common.shown(args.data),
            "problems": args.problems,
            "steps": args.steps,
            "batch_size": args.batch_size,
            "gradient_accumulation_steps": args.grad_accum,
            "warmup_steps": args.warmup_steps,
            "backend": args.backend,
            "overrides": args.overrides,
        },
        "modes": {mode: common.tidy_side(d) for mode, d in modes.items()},
        "ratios": ratios,
        "notes": [n for n in [common.contention_note(device, list(modes.values()))] if n],
    }
    print("\n" + common.throughput_table(result), *result["notes"], sep="\n")
    for name, r in ratios.items():
        print(f"{name}: tokens/s {common.fmt(r['tokens_per_s'])}x, peak memory {common.fmt(r['peak_memory'])}x")
    common.write_result(args.results_dir / f"sft_throughput-{device['slug']}.json", result)
    common.write_docs(args.results_dir, args.docs)
    return 1 if any("error" in d for d in modes.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
