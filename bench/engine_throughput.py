"""Issue #21: the two generation engines side by side, HF (`model.generate`) and vLLM, in one run.

    python bench/engine_throughput.py                       # tiny + Qwen2.5-0.5B-shaped, CPU: ~10 minutes
    python bench/engine_throughput.py --shapes tiny --problems 4 --max-new-tokens 16 --samples 2

Both engines run behind `fastmath.generation.generate`, loaded as `python -m fastmath eval` loads
them (`eval.engine=hf` / `eval.engine=vllm`, the same recipe, dtype and backend resolution; the base
unquantized on both, since vLLM's CPU build has no 4-bit one), each
in a fresh process, one after the other, on the same GSM8K test prompts (the zero-shot prompt SFT
trains on): greedy eval, then k samples per problem at eval's self-consistency temperature. Each
side is warmed up first, then timed alone; its start-up (loading, and for vLLM its engine process)
is reported apart, since an eval pays it once.

Models (random weights, fastmath's tiny tokenizer, no hub): `tiny` (fastmath.tiny's, stopping where
the model ends its turn, as eval does), and Qwen2.5-0.5B's shape, where every completion runs to
`max_new_tokens`: a random model's stops are chance, and sampled completions would differ in
length between the engines. Lengths are fixed by masking the stop tokens until then, the same rule
on both sides: HF's `min_new_tokens`, vLLM's `min_tokens` (vLLM's `ignore_eos` alone would still
stop on fastmath's end-of-turn `stop_token_ids`). Greedy completions are compared text for text
and token for token; samples are each engine's own draws (vLLM's seeded sampler vs the HF engine's
Gumbel-max), so only their rates are compared. Writes bench/results/engine_throughput-<device>.json
and rewrites docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/engine_throughput.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402

ENGINES = ("hf", "vllm")
FIXED_LENGTH = {"tiny": False, "0.5b": True}  # shapes this bench runs -> completions run to max_new_tokens


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0], allow_abbrev=False)
    parser.add_argument("--shapes", default="tiny,0.5b", help="tiny, 0.5b or both (default)")
    parser.add_argument("--data", type=Path, default=common.gsm8k("test"), help="GSM8K-format test file")
    parser.add_argument("--problems", type=int, default=16, help="first N test problems, every side (default 16)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="answer length cap (default 64)")
    parser.add_argument("--samples", type=int, default=8, help="k, samples per problem when sampling (default 8)")
    parser.add_argument("--work-dir", type=Path, default=common.REPO / "bench" / ".work", help="models, built once")
    parser.add_argument("--results-dir", type=Path, default=common.RESULTS_DIR, help="where the JSON result goes")
    parser.add_argument("--docs", type=Path, default=common.DOCS, help="markdown table rewritten from --results-dir")
    args = parser.parse_args(argv)
    args.shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    if not args.shapes or any(s not in FIXED_LENGTH for s in args.shapes):
        parser.error(f"--shapes: {','.join(args.shapes) or '(none)'}; choose from {', '.join(FIXED_LENGTH)}")
    for name in ("problems", "max_new_tokens", "samples"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    return args


# --- worker side --------------------------------------------------------------------------


class _FixedLengthLLM:
    """vLLM's `LLM` with every request run to its `max_tokens` (stop tokens masked until then: `min_tokens`),
    keeping each row's token ids in `ids`."""

    def __init__(self, llm, ids: list[list[int]]):
        self.llm, self.ids = llm, ids

    def generate(self, prompts, params, **kwargs):
        fixed = [p.clone() for p in params]
        for p in fixed:
            p.min_tokens = p.max_tokens
        outputs = self.llm.generate(prompts, fixed, **kwargs)
        self.ids.extend(list(o.outputs[0].token_ids) for o in outputs)
        return outputs


def _fix_length(model, engine: str, max_new_tokens: int) -> list[list[int]]:
    """Make every completion `max_new_tokens` long on either engine, by the same rule (see the module doc);
    the list every generated row's token ids then go to, in the engine's order (the prompts' order,
    longest first, on both). The random 0.5B's tokens mostly lie beyond the tiny tokenizer's
    vocabulary, so its texts are empty and only ids can show whether the engines agree."""
    ids: list[list[int]] = []
    if engine == "vllm":
        model.llm = _FixedLengthLLM(model.llm, ids)
        return ids
    model.generation_config.min_new_tokens = max_new_tokens  # generate() takes unset options from here
    generate = model.generate

    def recording(**kwargs):
        out = generate(**kwargs)
        ids.extend(out[:, kwargs["input_ids"].shape[1] :].tolist())
        return out

    model.generate = recording
    return ids


def _timed(model, tokenizer, prompts: list[str], decoding) -> tuple[list, float]:
    """The engine over every prompt, warmed up first: (each prompt's generations, wall seconds)."""
    from dataclasses import replace

    from fastmath.generation import generate

    generate(model, tokenizer, prompts[:2], replace(decoding, max_new_tokens=4))  # kernels, allocator, caches
    common.synchronize()
    start = time.perf_counter()
    outputs = generate(model, tokenizer, prompts, decoding, progress=True)
    common.synchronize()
    return outputs, time.perf_counter() - start


def _figures(outputs: list, wall: float) -> dict[str, Any]:
    completions = [g for samples in outputs for g in samples]
    tokens = sum(g.tokens for g in completions)
    return {
        "problems": len(outputs),
        "completions": len(completions),
        "wall_s": round(wall, 2),
        "problems_per_s": round(len(outputs) / wall, 3),
        "new_tokens_per_s": round(tokens / wall, 1),
        "tokens_per_completion": round(tokens / len(completions), 1),
        "ran_to_max_new_tokens": round(sum(g.finish_reason == "length" for g in completions) / len(completions), 3),
    }


def engine_task(spec: dict[str, Any]) -> dict[str, Any]:
    """Worker: one engine, loaded as `fastmath eval` loads it; greedy, then k samples, over the same prompts."""
    from fastmath import cli
    from fastmath.data import load_problems
    from fastmath.generation import Decoding
    from fastmath.models import load_for_generation, ready_backend, torch_dtype
    from fastmath.prompts import chat_messages, prompt_text

    engine, model_dir = spec["engine"], spec["model"]
    # 16-bit base on both sides: vLLM's CPU build has no 4-bit one, and the eval recipe's QLoRA base would
    # put bitsandbytes' CPU kernels on the HF side only
    overrides = {"model.name": model_dir, "model.load_in_4bit": False, "eval.engine": engine}
    recipe = cli.invocation("eval", None, overrides, model=model_dir).recipe
    start = time.perf_counter()
    backend = ready_backend(recipe.model) if engine == "hf" else "hf"  # vLLM loads the weights itself
    model, tokenizer = load_for_generation(recipe.model, recipe.eval, None, backend)
    load_s = time.perf_counter() - start
    served_by = getattr(model, "settings", {}).get("engine", "hf")  # a VllmModel says so; an HF model has none
    ids = _fix_length(model, engine, spec["max_new_tokens"]) if spec["fixed_length"] else None

    problems = load_problems(spec["data"], split="test", limit=spec["problems"], verbose=False)
    prompts = [prompt_text(tokenizer, chat_messages(p.question, p.lang)) for p in problems]
    cfg = recipe.eval
    greedy = Decoding(max_new_tokens=spec["max_new_tokens"], seed=cfg.seed)
    sampled = Decoding(max_new_tokens=spec["max_new_tokens"], do_sample=True, temperature=cfg.temperature,
                       num_return_sequences=spec["samples"], seed=cfg.seed)  # fmt: skip
    print(f"=== {engine}: greedy, {len(prompts)} problems ===", flush=True)
    greedy_out, greedy_wall = _timed(model, tokenizer, prompts, greedy)
    greedy_ids = ids[-len(prompts) :] if ids is not None else None  # the timed run's rows, after the warm-up's
    print(f"=== {engine}: {spec['samples']} samples each, {len(prompts)} problems ===", flush=True)
    sampled_out, sampled_wall = _timed(model, tokenizer, prompts, sampled)
    return {
        "engine": served_by,
        "backend": backend if engine == "hf" else None,
        "dtype": str(torch_dtype(recipe.model)).removeprefix("torch."),
        "load_s": round(load_s, 1),
        "greedy": _figures(greedy_out, greedy_wall),
        "sampling": {**_figures(sampled_out, sampled_wall), "temperature": cfg.temperature},
        "greedy_completions": [[g.text, g.tokens, g.finish_reason] for (g,) in greedy_out],
        "greedy_token_ids": greedy_ids,  # fixed-length runs: what greedy equality is judged on
        "load_average": common.load_average(),
    }


# --- the comparison -----------------------------------------------------------------------


def compared(hf: dict[str, Any], vllm: dict[str, Any]) -> dict[str, Any]:
    """vLLM against HF on one model: rate ratios per mode, and how many greedy completions are equal
    (text, token count and end; token ids where lengths were fixed)."""
    out: dict[str, Any] = {}
    for mode in ("greedy", "sampling"):
        for figure in ("problems_per_s", "new_tokens_per_s"):
            out[f"{mode} {figure}"] = common.ratio(vllm[mode][figure], hf[mode][figure], digits=2)
    key = "greedy_token_ids" if hf.get("greedy_token_ids") else "greedy_completions"
    pairs = list(zip(hf[key], vllm[key], strict=True))
    out["greedy equal"] = round(sum(a == b for a, b in pairs) / len(pairs), 3)
    out["start-up s"] = common.ratio(vllm["load_s"], hf["load_s"], digits=2)
    # problems at which vLLM's longer start-up is repaid by its greedy rate (None: it never is)
    saved = 1 / hf["greedy"]["problems_per_s"] - 1 / vllm["greedy"]["problems_per_s"]
    out["break-even problems"] = round(max(vllm["load_s"] - hf["load_s"], 0) / saved) if saved > 0 else None
    return out


def cpu_rule(ratios: dict[str, dict[str, Any]]) -> str:
    """What the measured ratios say about vLLM on a CPU, per model: its generation speed against its start-up."""
    verdicts = []
    for shape, r in ratios.items():
        verdicts.append(
            f"{shape}: vLLM {r['greedy problems_per_s']}x the problems/s greedy, {r['sampling problems_per_s']}x "
            f"with k samples; its start-up ({r['start-up s']}x HF's) is repaid after {r['break-even problems']} "
            "problems of greedy eval"
        )
    return "; ".join(verdicts)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = common.provenance()
    device = common.device_info()
    work = args.work_dir.resolve()
    models, sides, ratios = {}, {}, {}
    for shape in args.shapes:
        path = common.model_dir(work, shape)
        models[shape] = {**common.ensure_model(shape, path), "path": common.shown(path)}
        spec = {"model": str(path), "data": str(args.data.resolve()), "problems": args.problems,
                "max_new_tokens": args.max_new_tokens, "samples": args.samples,
                "fixed_length": FIXED_LENGTH[shape]}  # fmt: skip
        for engine in ENGINES:
            print(f"\n=== {shape}, {engine} ===", flush=True)
            sides[f"{shape} {engine}"] = common.run_worker(
                "bench.engine_throughput:engine_task", {**spec, "engine": engine}
            )
        hf, vllm = sides[f"{shape} hf"], sides[f"{shape} vllm"]
        if "error" not in hf and "error" not in vllm:
            ratios[f"{shape} vllm/hf"] = compared(hf, vllm)

    rule = cpu_rule({name.split()[0]: r for name, r in ratios.items()})
    rows = {}
    for name, side in sides.items():
        if "error" in side:
            rows[name] = {"error": side["error"]}
            continue
        rows[name] = {
            "engine": side["engine"],
            "backend": side["backend"],
            "dtype": side["dtype"],
            "load s": side["load_s"],
        }
        for mode in ("greedy", "sampling"):
            d = side[mode]
            rows[name] |= {f"{mode} problems/s": d["problems_per_s"], f"{mode} tokens/s": d["new_tokens_per_s"],
                           f"{mode} tokens/completion": d["tokens_per_completion"],
                           f"{mode} ran to max": d["ran_to_max_new_tokens"]}  # fmt: skip
    result = {
        "bench": "engine_throughput",
        **run,
        "device": device,
        "problems": args.problems,
        "max_new_tokens": args.max_new_tokens,
        "samples_per_problem": args.samples,
        "data": common.shown(args.data),
        "fixed_length": ", ".join(s for s in args.shapes if FIXED_LENGTH[s]) or "none",
        "cpu_rule": rule if device["kind"] == "cpu" else None,
        "models": {
            s: {k: m.get(k) for k in ("parameters", "dtype_on_disk", "weights", "path")} for s, m in models.items()
        },
        "sides": rows,
        "ratios": ratios,
        "runs": [{"side": name, **common.tidy_side(side)} for name, side in sides.items()],  # every figure
        "notes": [n for n in [common.contention_note(device, [s for s in sides.values() if "error" not in s])] if n],
    }
    print()
    columns = list(dict.fromkeys(k for r in rows.values() for k in r))
    print(common.table(["side", *columns], [[n, *(r.get(c) for c in columns)] for n, r in rows.items()]))
    for name, r in ratios.items():
        print(f"{name}: " + ", ".join(f"{k} {common.fmt(v)}" for k, v in r.items()))
    print(f"eval.engine auto on this CPU, by the measurement: {rule}", *result["notes"], sep="\n")
    common.write_result(args.results_dir / f"engine_throughput-{device['slug']}.json", result)
    common.write_docs(args.results_dir, args.docs)
    return 1 if any("error" in s for s in sides.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
