"""Peak memory of DPO vs SFT on the same model and batch size, side by side in one run.

    python bench/dpo_memory.py                      # tiny model on CPU (built into a temp dir)
    python bench/dpo_memory.py --model DIR --steps 10

Each stage runs as its own `python -m fastmath` process, as a user runs it, and reports the
peak from its summary.json: CUDA's allocator peak on a GPU, the peak resident set on CPU
(reset when training starts, so model loading is counted but not data preparation).
DPO holds two sequences per pair plus the frozen reference adapter's forward pass.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO.parent / "shared" / "data" / "gsm8k" / "train.jsonl"


def fastmath(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "fastmath", *args], cwd=REPO, env=env, check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="model directory (default: a tiny model built for this run)")
    parser.add_argument("--hidden-size", type=int, default=512, help="tiny model width when building one")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--data", default=str(TRAIN))
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fastmath-dpo-memory-"))
    model = args.model or str(work / "model")
    if not args.model:
        fastmath("tiny-model", model, "--hidden-size", str(args.hidden_size), "--layers", "4")
    common = [f"model.name={model}", f"training.output_dir={work / 'runs'}",
              "training.save_steps=1000", "training.report_to=none"]  # fmt: skip
    fastmath("sft", "recipes/tiny-sft.yaml", *common, f"data.train={args.data}", "data.limit=64",
             f"training.max_steps={args.steps}", f"training.batch_size={args.batch_size}",
             "training.run_name=sft")  # fmt: skip
    # Pairs of the same problems: the reference solution preferred over a wrong final line.
    pairs = work / "pairs.jsonl"
    rows = [json.loads(line) for line in Path(args.data).read_text().splitlines()[:64]]
    wrong = [r["answer"].rsplit("####", 1)[0] + "#### 0" for r in rows]
    pairs.write_text(
        "".join(json.dumps({"prompt": r["question"], "chosen": r["answer"], "rejected": w}) + "\n"
                for r, w in zip(rows, wrong, strict=True))
    )  # fmt: skip
    fastmath("dpo", "recipes/tiny-dpo.yaml", *common, f"dpo.sft_run={work / 'runs' / 'sft'}", f"dpo.pairs={pairs}",
             f"dpo.max_steps={args.steps}", f"dpo.batch_size={args.batch_size}", "training.run_name=dpo")  # fmt: skip

    sft, dpo = (json.loads((work / "runs" / name / "summary.json").read_text()) for name in ("sft", "dpo"))
    result = {
        "bench": "dpo_memory",
        "device": "cuda" if sft["peak_memory_kind"] == "cuda" else "cpu",
        "memory": "CUDA peak allocated" if sft["peak_memory_kind"] == "cuda" else "peak resident set (VmHWM)",
        "date": time.strftime("%Y-%m-%d"),
        "command": shlex.join([sys.executable, *sys.argv]),
        "model": model if args.model else f"tiny (hidden {args.hidden_size}, 4 layers)",
        "batch_size": args.batch_size,
        "steps": args.steps,
        "sft_peak_gb": sft["peak_memory_gb"],
        "dpo_peak_gb": dpo["peak_memory_gb"],
        "dpo_over_sft": round(dpo["peak_memory_gb"] / sft["peak_memory_gb"], 3),
        "sft_tokens": sft["tokens"],
        "dpo_tokens": dpo["tokens"],
        "versions": sft["versions"],
    }
    out = Path(args.out) / f"dpo_memory-{result['device']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"peak memory ({result['device']}): SFT {result['sft_peak_gb']} GB, DPO {result['dpo_peak_gb']} GB, "
        f"DPO/SFT = {result['dpo_over_sft']}x  (batch {args.batch_size}, {args.steps} steps)\nwrote {out}"
    )


if __name__ == "__main__":
    main()
