"""Issue #11: tiny SFT tokens/s and peak memory, transformers + PEFT (hf) vs Unsloth, side by side.

    python bench/backend_throughput.py                      # tiny model built in a temp dir, CPU: minutes
    python bench/backend_throughput.py --model DIR --steps 30 lora.r=8

Each backend runs the project's real `run_sft` in a fresh process (Unsloth patches the whole
process it is imported in), one after the other, with the same recipe, problems, seed, steps and
dtype (fp32 on a CPU). Both train padded batches: Unsloth turns padding-free off, so hf is asked
for padded too, and the comparison is of the backends, not of the batching. On a CPU this is the
measurement `model.backend: auto` follows. Writes bench/results/backend_throughput-<device>.json
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--model", type=Path, help="model directory (default: build the tiny model in a temp dir)")
    parser.add_argument("--recipe", type=Path, default=common.SFT_RECIPE, help="SFT recipe (default: the 7B one)")
    common.add_training_args(parser, steps=20)
    return parser.parse_args(argv)


def measure(args: argparse.Namespace, model: Path, output_dir: Path) -> dict[str, dict[str, Any]]:
    """One `run_sft` per backend, each in its own process; their figures by backend."""
    shared = {**common.training_overrides(args, model, output_dir), "training.batching": "padded"}
    common.check_recipe(args.recipe, shared)
    results = {}
    for backend in BACKENDS:
        print(f"\n=== backend={backend} ===", flush=True)
        spec = {"stage": "sft", "recipe": str(args.recipe), "backend": backend, "warmup_steps": args.warmup_steps,
                "overrides": {**shared, "training.run_name": f"sft-{backend}"}}  # fmt: skip
        results[backend] = common.run_worker("bench.common:train_task", spec)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = common.provenance()
    device = common.device_info()
    with tempfile.TemporaryDirectory(prefix="backend-throughput-") as tmp:
        model, record = common.model_or_tiny(args.model, Path(tmp))
        backends = measure(args, model, Path(tmp) / "runs")

    hf, unsloth = backends["hf"], backends["unsloth"]
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
            "warmup_steps": args.warmup_steps,
            "overrides": args.overrides,
        },
        "backends": {name: common.tidy_side(d) for name, d in backends.items()},
        "ratios": {
            "unsloth/hf": {
                "tokens_per_s": common.ratio(unsloth.get("tokens_per_s"), hf.get("tokens_per_s")),
                "peak_memory": common.ratio(unsloth.get("peak_memory_gb"), hf.get("peak_memory_gb")),
                "first_loss_relative_diff": common.relative_diff(unsloth.get("first_loss"), hf.get("first_loss")),
            }
        },
        "notes": [n for n in [common.contention_note(device, list(backends.values())), unsloth.get("note")] if n],
    }
    r = result["ratios"]["unsloth/hf"]
    ratios = f"tokens/s {common.fmt(r['tokens_per_s'])}x, peak memory {common.fmt(r['peak_memory'])}x"
    print(f"\nunsloth/hf: {ratios}, first loss relative diff {common.fmt(r['first_loss_relative_diff'])}")
    print(*result["notes"], sep="\n")
    common.write_result(args.results_dir / f"backend_throughput-{device['slug']}.json", result)
    common.write_docs(args.results_dir, args.docs)
    return 1 if any("error" in d for d in backends.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
