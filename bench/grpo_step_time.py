"""Issue #12: where a GRPO step's time goes: rollout (sampling), scoring (rewards, log-probs) and training.

    python bench/grpo_step_time.py                          # tiny model built in a temp dir, CPU: a minute
    python bench/grpo_step_time.py --model DIR --steps 10 grpo.num_generations=8

One real `python -m fastmath grpo` run (the tiny GRPO recipe, a fresh LoRA on the model) logs per
step `timing/rollout_s` (model.generate of the step's completions), `timing/score_s` (the grader's
rewards, log-probabilities, advantages) and TRL's `step_time`; training is the rest (forward,
backward, optimizer). The split is measured inside one run, step by step, so it is a ratio of
parts of the same steps. Writes bench/results/grpo_step_time-<device>.json, rewrites docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import mean

import yaml

if __package__ in (None, ""):  # `python bench/grpo_step_time.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--model", type=Path, help="model directory (default: build the tiny model in a temp dir)")
    parser.add_argument("--steps", type=int, default=6, help="GRPO steps (default 6)")
    parser.add_argument("--warmup-steps", type=int, default=1, help="steps left out of the means (default 1)")
    parser.add_argument("--results-dir", type=Path, default=common.RESULTS_DIR, help="where the JSON result goes")
    parser.add_argument("--docs", type=Path, default=common.DOCS, help="markdown table rewritten from --results-dir")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides for the run")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = common.provenance()
    device = common.device_info()
    with tempfile.TemporaryDirectory(prefix="grpo-step-time-") as tmp:
        model, record = common.model_or_tiny(args.model, Path(tmp))
        argv = ["grpo", "tiny-grpo", "grpo.fresh_lora=true", f"model.name={model}", f"grpo.max_steps={args.steps}",
                "training.save_steps=1000000", f"training.output_dir={tmp}", "training.run_name=grpo",
                *args.overrides]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(common.REPO)}
        done = subprocess.run([sys.executable, "-m", "fastmath", *argv], cwd=common.REPO, env=env)
        if done.returncode != 0:
            raise SystemExit(f"the GRPO run failed (exit {done.returncode}); its output is above")
        rows = [json.loads(line) for line in (Path(tmp) / "grpo" / "metrics.jsonl").read_text().splitlines()]
        grpo = yaml.safe_load((Path(tmp) / "grpo" / "recipe.yaml").read_text())["grpo"]

    steady = [r for r in rows if r["step"] > args.warmup_steps]
    step = mean(r["step_time"] for r in steady)
    rollout, score = mean(r["timing/rollout_s"] for r in steady), mean(r["timing/score_s"] for r in steady)
    parts = {"rollout_s": rollout, "score_s": score, "train_s": step - rollout - score}
    result = {
        "bench": "grpo_step_time",
        **run,
        "device": device,
        "model": record,
        "settings": {"steps": args.steps, "warmup_steps": args.warmup_steps, "overrides": args.overrides},
        "problems_per_step": grpo["batch_size"],
        "num_generations": grpo["num_generations"],
        "max_completion_length": grpo["max_completion_length"],
        "completion_mean_length": round(mean(r["completions/mean_length"] for r in steady), 1),
        # one row per part of a step (docs/benchmarks.md draws it as a table), the whole step last
        "per_step": {
            **{k.removesuffix("_s"): {"seconds": round(v, 3), "share": round(v / step, 3)} for k, v in parts.items()},
            "whole step": {"seconds": round(step, 3), "share": 1.0},
        },
        "notes": [n for n in [common.contention_note(device, [{"load_average": common.load_average()}])] if n],
    }
    shares = ", ".join(f"{k.removesuffix('_s')} {v / step:.0%}" for k, v in parts.items())
    print(f"\nGRPO step {step:.2f} s: {shares}", *result["notes"], sep="\n")
    common.write_result(args.results_dir / f"grpo_step_time-{device['slug']}.json", result)
    common.write_docs(args.results_dir, args.docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
