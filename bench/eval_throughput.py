"""Issue #3: problems/s of the batched generation engine vs one-at-a-time `model.generate`, side by side.

    python bench/eval_throughput.py                                   # tiny model built in a temp dir (CPU)
    python bench/eval_throughput.py --model DIR --adapter outputs/<run> --problems 256 --max-new-tokens 512
    python bench/eval_throughput.py --model DIR model.load_in_4bit=false     # recipe overrides for loading

Both sides decode the same GSM8K test prompts (the zero-shot prompt SFT trains on) greedily with
the same model loaded once, the same stop tokens and the same `max_new_tokens`: the only
difference is batching (`fastmath.generation.generate`: length-sorted, left-padded batches) versus
a plain loop of `model.generate` calls. Each side is warmed up first and timed alone (CUDA
synchronised). Also reported: how many answers are identical on both sides (greedy decoding of
the same prompt should not depend on batching; on a GPU, low-precision kernels may differ in a few).
Writes bench/results/eval_throughput-<device>.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/eval_throughput.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0], allow_abbrev=False)
    parser.add_argument("--model", type=Path, help="model directory (default: build the tiny model in a temp dir)")
    parser.add_argument("--adapter", type=Path, help="LoRA adapter run directory (its recipe says how the model loads)")
    parser.add_argument("--data", type=Path, default=common.gsm8k("test"), help="GSM8K-format test file")
    parser.add_argument("--problems", type=int, default=64, help="first N test problems, both sides (default 64)")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="answer length cap (default 128)")
    parser.add_argument("--batch-size", type=int, help="batched side's prompts per batch (default: automatic)")
    parser.add_argument("--results-dir", type=Path, default=common.RESULTS_DIR, help="where the JSON result goes")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides, e.g. model.backend=hf")
    return parser.parse_args(argv)


def load(model_dir: Path, adapter: Path | None, overrides: list[str]):
    """Model (+ adapter) and tokenizer as `python -m fastmath eval` loads them (the same resolution)."""
    from fastmath import cli
    from fastmath.models import ready_backend

    typed = cli.parse_overrides(overrides) | ({} if adapter else {"model.name": str(model_dir)})
    inv = cli.invocation("eval", None, typed, lora=str(adapter) if adapter else None, model=str(model_dir))
    backend = ready_backend(inv.recipe.model)
    from fastmath.models import load_for_inference

    return load_for_inference(inv.recipe.model, str(adapter) if adapter else None, backend)


def batched(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int | None) -> tuple[list, float]:
    """The engine over every prompt, timed after a warm-up: (texts and token counts, wall seconds)."""
    from fastmath.generation import Decoding, generate
    from fastmath.train.trainer import reset_peak_memory

    generate(model, tokenizer, prompts[:2], Decoding(max_new_tokens=4), batch_size=2)  # kernels, allocator
    common.synchronize()
    reset_peak_memory()
    start = time.perf_counter()
    outputs = generate(model, tokenizer, prompts, Decoding(max_new_tokens=max_new_tokens), batch_size, progress=True)
    common.synchronize()
    return [(o[0].text, o[0].tokens) for o in outputs], time.perf_counter() - start


def one_at_a_time(model, tokenizer, prompts: list[str], max_new_tokens: int) -> tuple[list, float]:
    """A plain `model.generate` loop, greedy, stopping on the same tokens: (texts and token counts, wall seconds)."""
    from fastmath.generation import greedy_kwargs, stop_token_ids
    from fastmath.train.trainer import reset_peak_memory

    eos = stop_token_ids(model, tokenizer)

    def one(prompt: str, limit: int) -> tuple[str, int]:
        inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
        out = model.generate(**inputs, **greedy_kwargs(eos, tokenizer.pad_token_id), max_new_tokens=limit)
        new = out[0, inputs["input_ids"].shape[1] :].tolist()
        end = next((i for i, t in enumerate(new) if t in eos), len(new))
        return tokenizer.decode(new[:end], skip_special_tokens=True), min(end + 1, len(new))

    one(prompts[0], 4)  # warm-up, as for the engine
    common.synchronize()
    reset_peak_memory()
    start = time.perf_counter()
    outputs = [one(p, max_new_tokens) for p in prompts]
    common.synchronize()
    return outputs, time.perf_counter() - start


def figures(outputs: list[tuple[str, int]], wall: float) -> dict[str, Any]:
    tokens = [t for _, t in outputs]
    rate = len(outputs) / wall
    return {
        "wall_s": round(wall, 2),
        "problems_per_s": round(rate, 3),
        "new_tokens_per_s": round(sum(tokens) / wall, 1),
        "tokens_per_problem": round(sum(tokens) / len(tokens), 1),
        "projected_full_test_s": round(common.GSM8K_TEST_SIZE / rate, 1),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = common.provenance()
    device = common.device_info()
    from fastmath.data import load_problems
    from fastmath.prompts import chat_messages, prompt_text
    from fastmath.tiny import build_tiny_model

    with tempfile.TemporaryDirectory(prefix="eval-throughput-") as tmp:
        model_dir = args.model or build_tiny_model(Path(tmp) / "tiny-qwen2")
        model, tokenizer = load(model_dir, args.adapter, args.overrides)
    problems = load_problems(str(args.data), split="test", limit=args.problems, verbose=False)
    prompts = [prompt_text(tokenizer, chat_messages(p.question, p.lang)) for p in problems]

    print(f"=== batched engine: {len(prompts)} problems ===", flush=True)
    fast, fast_wall = batched(model, tokenizer, prompts, args.max_new_tokens, args.batch_size)
    print(f"=== one at a time: {len(prompts)} problems ===", flush=True)
    slow, slow_wall = one_at_a_time(model, tokenizer, prompts, args.max_new_tokens)

    sides = {"batched": figures(fast, fast_wall), "one_at_a_time": figures(slow, slow_wall)}
    speedup = common.ratio(sides["batched"]["problems_per_s"], sides["one_at_a_time"]["problems_per_s"], digits=2)
    same = sum(a[0] == b[0] for a, b in zip(fast, slow, strict=True))
    result = {
        "bench": "eval_throughput",
        **run,
        "device": device,
        "settings": {
            "model": "tiny (fastmath.tiny, built in a temp dir)" if args.model is None else common.shown(args.model),
            "adapter": common.shown(args.adapter) if args.adapter else None,
            "data": common.shown(args.data),
            "problems": len(prompts),
            "max_new_tokens": args.max_new_tokens,
            "batch_size": args.batch_size or "auto",
            "decoding": "greedy",
            "overrides": args.overrides,
        },
        "sides": sides,
        "speedup": speedup,
        "identical_answers": f"{same}/{len(prompts)}",
    }
    print()
    headers = ["side", "problems/s", "new tokens/s", "tokens/problem", f"{common.GSM8K_TEST_SIZE} problems (s, proj.)"]
    rows = [
        [name, s["problems_per_s"], s["new_tokens_per_s"], s["tokens_per_problem"], s["projected_full_test_s"]]
        for name, s in sides.items()
    ]
    print(common.table(headers, rows))
    print(f"batched / one-at-a-time: {common.fmt(speedup)}x problems/s; identical answers {same}/{len(prompts)}")
    common.write_result(args.results_dir / f"eval_throughput-{device['slug']}.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
