"""`make quickstart`: the whole pipeline, offline on CPU, in a few minutes.

tiny model -> SFT -> pairs mined from the SFT model -> DPO -> eval of base, SFT and DPO on the
same problems -> a before/after table. Every stage is the real command a user runs on a GPU,
with the tiny recipes. The tiny model learns the sample problems by heart: the table shows that
each stage did its job and was measured, not that a 1M-parameter model can do arithmetic.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fastmath.config import load_recipe
from fastmath.dpo import run_dpo
from fastmath.pairs import mine_pairs
from fastmath.sft import run_sft
from fastmath.tiny import build_tiny_model

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data" / "sample_english_math.json"
STRATEGY = "zero_shot"  # the prompt SFT trains on


def evaluate_run(model: Path, adapter: Path | None, outputs: Path, samples: int, max_new_tokens: int) -> dict:
    """Run `python -m fastmath eval` in-process on the first `samples` problems; return its summary."""
    from fastmath.evaluate import base_run_dir
    from fastmath.evaluate import main as eval_main

    argv = ["--model", str(model), "--dataset", str(DATA), "--strategies", STRATEGY, "--samples", str(samples),
            "--max-new-tokens", str(max_new_tokens), "--output-dir", str(outputs)]  # fmt: skip
    if adapter is not None:
        argv += ["--lora", str(adapter)]
    eval_main(argv)
    run_dir = adapter or base_run_dir(outputs, str(model))
    return json.loads((run_dir / "eval" / DATA.stem / "summary.json").read_text())[STRATEGY] | {"run": str(run_dir)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastmath quickstart", description=__doc__.split("\n")[0])
    parser.add_argument("--outputs", type=Path, default=Path("outputs"), help="where the runs go")
    parser.add_argument("--model", type=Path, default=Path("models/tiny-qwen2"), help="tiny model directory")
    parser.add_argument("--max-new-tokens", type=int, default=200)
    args = parser.parse_args(argv)

    if not (args.model / "config.json").is_file():
        build_tiny_model(args.model)
        print(f"1/5 tiny model built: {args.model}")
    common = {"model.name": str(args.model), "training.output_dir": str(args.outputs), "data.train": str(DATA)}
    sft_recipe = load_recipe(REPO / "recipes" / "tiny-sft.yaml", common)
    sft = run_sft(sft_recipe)
    print(f"2/5 SFT finished: {sft}")
    dpo_recipe = load_recipe(REPO / "recipes" / "tiny-dpo.yaml", {**common, "dpo.sft_run": str(sft)})
    dpo_recipe.eval.max_new_tokens = args.max_new_tokens
    stats = mine_pairs(dpo_recipe)
    print(f"3/5 pairs mined: {stats['pairs']} from {stats['problems']} problems")
    dpo = run_dpo(dpo_recipe)
    print(f"4/5 DPO finished: {dpo}")

    # The problems SFT learned (data.limit): the tiny model memorises, it does not generalise.
    samples = sft_recipe.data.limit
    rows = {name: evaluate_run(args.model, adapter, args.outputs, samples, args.max_new_tokens)
            for name, adapter in (("base", None), ("sft", sft), ("dpo", dpo))}  # fmt: skip
    print(f"5/5 evaluated on the {samples} problems of {DATA.name} it trained on (strategy {STRATEGY}):\n")
    print(f"{'stage':<6} {'accuracy':>9} {'95% CI':>17} {'no answer':>10}  run")
    for name, s in rows.items():
        lo, hi = s["ci95"]
        print(f"{name:<6} {s['accuracy']:>9.1%} {f'[{lo:.1%}, {hi:.1%}]':>17} {s['no_answer_rate']:>10.1%}  {s['run']}")
    print(f"\nbrowse it: streamlit run app.py -- --outputs {args.outputs}")
    return 0
