"""vLLM behind the generation engine: the same prompts, stops, cuts, counts and records as the HF path.

`eval.engine` picks it: `hf` (transformers' `generate`), `vllm`, or `auto`: vLLM on CUDA where it is
installed; on CPU, vLLM for a 16-bit model of at least `CPU_MIN_PARAMETERS`, else the HF engine. That
CPU rule is bench/engine_throughput.py's (docs/benchmarks.md): on Qwen2.5-0.5B's shape vLLM generated
about 20x faster, so its start-up (5 minutes against HF's 7 s, compiling the model the first time) was
repaid after 7 problems; on the tiny test model (0.7M parameters) only after 300, so the HF engine's
start-up of seconds wins for the tests and quick evals. The line between lies between the two measured
sizes, not at a measured crossover. A 4-bit (QLoRA) base stays on the HF engine on CPU, where vLLM
could only serve it over the 16-bit base.
An adapter is served un-merged (`LoRARequest`), so the base
weights stay as loaded. vLLM's CPU build has no bitsandbytes: a QLoRA adapter is then served over the
16-bit base (a different model from training's); that is warned and recorded, never done silently.

Prompts go in as token ids (tokenized as the HF path does, no special tokens added), and each
completion's token ids come back through the HF path's own `_finish`, so the stop-string cut, the
truncation flag and the token count are computed by one rule. Sampling: one request per sample with
its own seed (`row_seed`, `SamplingParams(seed=...)`), so a prompt's samples do not depend on what
shares the batch (they are vLLM's draws, not the HF engine's Gumbel-max ones).

On CPU, vLLM's `gpu_memory_utilization` is a fraction of host memory and 0.92 (its default) fails:
a small fraction and `VLLM_CPU_KVCACHE_SPACE` (GiB of KV cache) are set unless the user set them.
vLLM starts its engine in a new process: callers run under `if __name__ == "__main__"`
(`python -m fastmath` does).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastmath.config import EvalConfig, ModelConfig
from fastmath.errors import FastmathError
from fastmath.log import log

ENGINES = ("auto", "hf", "vllm")
CPU_MEMORY_FRACTION = 0.1  # of host memory, for vLLM's CPU build (its 0.92 default fails)
CPU_KVCACHE_GIB = "1"  # VLLM_CPU_KVCACHE_SPACE unless set
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts
# auto on CPU: vLLM from here (bench/engine_throughput.py: repaid after 7 problems at 494M, 300 at 0.7M)
CPU_MIN_PARAMETERS = 100_000_000


def available() -> bool:
    """Whether vLLM can be imported here (its CPU build or its CUDA one)."""
    return importlib.util.find_spec("vllm") is not None


def on_cuda() -> bool:
    """Whether vLLM here is its CUDA build's (bitsandbytes, TRL's GPU share) rather than its CPU build's."""
    import torch

    return torch.cuda.is_available()


def resolve(engine: str, model_cfg: ModelConfig | None = None) -> str:
    """`hf` or `vllm` for `eval.engine` (`auto`: the rule in the module doc, from the bench)."""
    if engine == "vllm" and not available():
        raise FastmathError("eval.engine=vllm needs vLLM: run `make install` (see README: vLLM), or set eval.engine=hf")
    if engine == "auto":
        if not available():
            return "hf"
        if on_cuda():
            return "vllm"
        large = model_cfg is not None and not model_cfg.load_in_4bit and _parameters(model_cfg) >= CPU_MIN_PARAMETERS
        return "vllm" if large else "hf"
    return engine


def _parameters(model_cfg: ModelConfig) -> int:
    """The model's parameter count, estimated from its config (0 when the config cannot be read here)."""
    from transformers import AutoConfig

    try:
        c = AutoConfig.from_pretrained(model_cfg.name, revision=model_cfg.revision)
        hidden, layers = c.hidden_size, c.num_hidden_layers
        mlp = 3 * hidden * getattr(c, "intermediate_size", 4 * hidden)
        return layers * (4 * hidden * hidden + mlp) + c.vocab_size * hidden
    except (OSError, ValueError, AttributeError):
        return 0


@dataclass
class VllmModel:
    """A vLLM engine with the run's adapter: what the generation engine gets in place of an HF model."""

    llm: Any
    lora: Any  # LoRARequest or None
    generation_config: Any  # the base model's, for its EOS ids (`generation.stop_token_ids`)
    settings: dict[str, Any] = field(default_factory=dict)  # recorded with results: which engine, what base

    @property
    def device(self):
        import torch

        return torch.device("cuda" if on_cuda() else "cpu")

    def swap_adapter(self, adapter: str | Path) -> None:
        """Serve `adapter` from now on (a new LoRARequest id, so vLLM loads it afresh)."""
        from vllm.lora.request import LoRARequest

        number = (self.lora.lora_int_id + 1) if self.lora is not None else 1
        self.lora = LoRARequest(f"adapter-{number}", number, str(adapter))

    def complete(self, prompt_ids: list[list[int]], params: list[Any]) -> list[list[int]]:
        """Each prompt's generated token ids under its own SamplingParams, in order."""
        from vllm.exceptions import VLLMValidationError
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in prompt_ids]
        try:
            outputs = self.llm.generate(prompts, params, lora_request=self.lora, use_tqdm=False)
        except VLLMValidationError as e:  # a prompt past the model's context, which the HF engine runs past
            raise FastmathError(
                f"vLLM refused a prompt: {e}; use a shorter strategy or fewer shots, or eval.engine=hf"
            ) from None
        return [list(o.outputs[0].token_ids) for o in outputs]


def lora_rank(adapter: str) -> int:
    """The smallest `max_lora_rank` vLLM accepts that holds the adapter's rank."""
    import json

    rank = json.loads((Path(adapter) / "adapter_config.json").read_text(encoding="utf-8")).get("r", 16)
    return next((r for r in LORA_RANKS if r >= rank), LORA_RANKS[-1])


def host_memory_settings() -> dict[str, Any]:
    """vLLM's memory options for this machine: on CPU a fraction of host memory it can have."""
    if on_cuda():
        return {}
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", CPU_KVCACHE_GIB)
    return {"gpu_memory_utilization": CPU_MEMORY_FRACTION}


def load(model_cfg: ModelConfig, eval_cfg: EvalConfig, source: str, adapter: str | None) -> VllmModel:
    """A vLLM engine over `source` in the recipe's dtype, `adapter` attached un-merged."""
    from transformers import GenerationConfig
    from vllm import LLM
    from vllm.lora.request import LoRARequest

    from fastmath.models import torch_dtype

    settings: dict[str, Any] = {"engine": "vllm"}
    kwargs: dict[str, Any] = {
        "model": source,
        "tokenizer": source,
        "revision": model_cfg.revision,
        "dtype": str(torch_dtype(model_cfg)).removeprefix("torch."),
        "max_model_len": model_cfg.max_seq_length + eval_cfg.max_new_tokens,
        "generation_config": "vllm",  # no repetition penalty etc. from the model's defaults, as the HF path
        "tensor_parallel_size": eval_cfg.tensor_parallel_size,
        "data_parallel_size": eval_cfg.data_parallel_size,
        "seed": eval_cfg.seed,
        **host_memory_settings(),
    }
    if model_cfg.load_in_4bit:
        if on_cuda() and importlib.util.find_spec("bitsandbytes") is not None:
            kwargs["quantization"] = "bitsandbytes"
            settings["base"] = "4-bit"
        else:
            log.warning(
                "vLLM here has no 4-bit (bitsandbytes) base: the QLoRA adapter is served over the 16-bit base, "
                "which is not the model it was trained on (eval.engine=hf evaluates the 4-bit one)"
            )
            settings["base"] = "16-bit (QLoRA adapter, 4-bit base unavailable to vLLM here)"
    if adapter:
        kwargs |= {"enable_lora": True, "max_lora_rank": lora_rank(adapter), "max_loras": 1}
    try:
        config = GenerationConfig.from_pretrained(source, revision=model_cfg.revision)
    except OSError:  # no generation_config.json: the model config's EOS
        from transformers import AutoConfig

        config = GenerationConfig.from_model_config(AutoConfig.from_pretrained(source, revision=model_cfg.revision))
    llm = LLM(**kwargs)
    lora = LoRARequest("adapter-1", 1, str(adapter)) if adapter else None
    return VllmModel(llm, lora, config, settings)


def params(decoding, seeds: list[int] | None, stop_ids: list[int]) -> list[Any]:
    """One SamplingParams per row: greedy, or sampling with the row's own seed."""
    from vllm import SamplingParams

    common = {
        "max_tokens": decoding.max_new_tokens,
        "stop": list(decoding.stop) or None,
        "stop_token_ids": stop_ids,
        "skip_special_tokens": True,
    }
    if seeds is None:
        return [SamplingParams(temperature=0.0, **common)]
    return [SamplingParams(temperature=decoding.temperature, top_p=decoding.top_p, seed=s, **common) for s in seeds]


def batches(model: VllmModel, tokenizer, prompts: list[str], decoding, order: list[int], size: int) -> Iterator:
    """`generation.generate_batches` through vLLM: (prompt index, its samples) per chunk of `size` prompts."""
    from fastmath.generation import _finish, row_seed, stop_token_ids

    n = decoding.num_return_sequences
    stop_ids = stop_token_ids(model, tokenizer)
    terminators = {*stop_ids, tokenizer.pad_token_id}
    for start in range(0, len(order), size):
        chunk = order[start : start + size]
        texts = [prompts[i] for i in chunk]
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        rows = [p for p in ids for _ in range(n)]
        seeds = [row_seed(decoding.seed, t, j) for t in texts for j in range(n)] if decoding.do_sample else None
        sampling = params(decoding, seeds, stop_ids)
        out = model.complete(rows, sampling * len(rows) if seeds is None else sampling)
        done = [_finish(r, terminators, decoding.stop, tokenizer) for r in out]
        yield [(i, done[k * n : (k + 1) * n]) for k, i in enumerate(chunk)]
