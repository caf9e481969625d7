"""`make quickstart`: the whole pipeline, offline on CPU, in a few minutes.

tiny model -> SFT -> pairs mined from the SFT model -> DPO, and GRPO from the same SFT run -> eval
of base, SFT, DPO and GRPO on the same problems -> a before/after table. Every stage is the command
a user types, run as its own process (a stage on Unsloth must import it before anything else),
with the shipped tiny recipes: every stage whose record (`stages`) names a tiny recipe, in the
registry's order, each continuing its parent stage's run.
The tiny model learns the sample problems by heart: the table shows that each stage did its job
and was measured, not that a 1M-parameter model can do arithmetic.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from fastmath import runs, stages
from fastmath.config import load_recipe
from fastmath.errors import FastmathError
from fastmath.log import log
from fastmath.resources import recipe_path
from fastmath.tiny import build_tiny_model

DATA = "fastmath:samples/sample_english_math.json"
STRATEGY = "zero_shot"  # the prompt SFT trains on


def command(*argv: str) -> None:
    """One stage: `python -m fastmath ...`, as its own process, its output passed through."""
    if subprocess.run([sys.executable, "-m", "fastmath", *argv]).returncode != 0:
        raise FastmathError(f"`python -m fastmath {' '.join(argv)}` failed; its message is above")


def evaluate(run: Path, samples: int, max_new_tokens: int, *source: str) -> dict:
    """`python -m fastmath eval` on the first `samples` problems; its summary, and the run it went to."""
    command("eval", *source, "--dataset", DATA, "--strategies", STRATEGY, "--samples", str(samples),
            "--max-new-tokens", str(max_new_tokens), "--output-dir", str(run.parent))  # fmt: skip
    summary = json.loads((runs.eval_dir(run, "sample_english_math") / runs.SUMMARY).read_text())
    return summary[STRATEGY] | {"run": str(run)}


def main(inv) -> int:
    outputs, model, max_new = inv.args.outputs, inv.args.model, inv.args.max_new_tokens
    tiny = load_recipe(recipe_path("tiny-sft"))
    # The later stages take the backend from the SFT run they continue; the base model's eval is told.
    backend = [f"model.backend={inv.args.backend or tiny.model.backend}"]
    staged = [s for s in stages.registry().values() if s.tiny_recipe]
    steps = len(staged) + 2
    if not (model / "config.json").is_file():
        build_tiny_model(model)
        log.info(f"1/{steps} tiny model built: {model}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    trained: dict[str, Path] = {}  # stage -> its run
    for number, stage in enumerate(staged, start=2):
        argv = [stage.name, stage.tiny_recipe or "", f"data.train={DATA}", f"training.output_dir={outputs}"]
        if stage.parent is None:
            argv += [f"model.name={model}", *backend]
        else:  # it continues the parent stage's run, whose model and backend it takes
            argv.append(f"{stage.parent_key}={trained[stage.parent]}")
        if "eval" in stage.sections:
            argv.append(f"eval.max_new_tokens={max_new}")
        if stage.trains:
            trained[stage.name] = outputs / f"quickstart-{stage.name}-{stamp}"
            argv.append(f"training.run_name={trained[stage.name].name}")
        command(*argv)
        log.info(f"{number}/{steps} {stage.name} finished" + (f": {trained[stage.name]}" if stage.trains else ""))

    # The problems SFT learned (data.limit): the tiny model memorises, it does not generalise.
    samples = tiny.data.limit
    assert samples is not None, "the tiny recipe sets data.limit"
    rows = {"base": evaluate(runs.base_run(outputs, str(model)), samples, max_new, "--model", str(model), *backend)}
    rows |= {name: evaluate(run, samples, max_new, "--lora", str(run)) for name, run in trained.items()}
    lines = [f"{steps}/{steps} evaluated on the {samples} problems of {DATA} it trained on (strategy {STRATEGY}):\n",
             f"{'stage':<6} {'accuracy':>9} {'95% CI':>17} {'no answer':>10}  run"]  # fmt: skip
    for name, s in rows.items():
        lo, hi = s["ci95"]
        lines.append(
            f"{name:<6} {s['accuracy']:>9.1%} {f'[{lo:.1%}, {hi:.1%}]':>17} {s['no_answer_rate']:>10.1%}  {s['run']}"
        )
    log.info("\n".join(lines) + f"\n\nbrowse it: streamlit run app.py -- --outputs {outputs}")
    return 0
