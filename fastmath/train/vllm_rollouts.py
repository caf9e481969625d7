"""GRPO rollouts through vLLM, fed the step's LoRA adapter instead of merged weights (`grpo.use_vllm`).

TRL's colocated vLLM keeps a PEFT policy in step by merging the adapter into the base and loading
every merged weight into the engine. vLLM's CPU build cannot take that: it prepacks each linear
weight for its GEMM kernels and leaves a parameter that cannot be reloaded (`'Parameter' object has
no attribute 'weight_loader'` at the first sync); on a GPU, merging into a 4-bit base is slow and
lossy. Here the engine starts with LoRA enabled, and each sync (TRL's: before the first rollout of
an optimizer step) saves the adapter and serves it as a new `LoRARequest` (a new id, so vLLM loads
it afresh); every rollout goes out with that request. The base weights in vLLM never change.

The engine is vLLM's ordinary one (its engine core in a process of its own: callers run under
`if __name__ == "__main__"`, as `python -m fastmath` does), with `vllm_engine`'s host-memory settings
on CPU. One process, tensor parallel 1: the only colocated layout fastmath trains in.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from fastmath.config import Recipe
from fastmath.errors import FastmathError

VLLM_MAX_TEMPERATURE = 2.0  # vLLM's SamplingParams refuses hotter


def check(recipe: Recipe, backend: str) -> None:
    """Refuse, before anything is written, a `grpo.use_vllm` run that cannot serve its own policy."""
    from fastmath import vllm_engine

    if not vllm_engine.available():
        raise FastmathError("grpo.use_vllm needs vLLM: run `make install` (README: vLLM), or set grpo.use_vllm=false")
    if backend != "hf":
        raise FastmathError(
            "grpo.use_vllm runs on the hf backend (Unsloth's GRPOTrainer brings its own vLLM path): "
            "set model.backend=hf, or grpo.use_vllm=false"
        )
    if recipe.grpo.temperature > VLLM_MAX_TEMPERATURE:
        raise FastmathError(
            f"grpo.temperature={recipe.grpo.temperature}: vLLM samples at temperatures up to {VLLM_MAX_TEMPERATURE}; "
            "lower it, or set grpo.use_vllm=false"
        )
    if recipe.model.load_in_4bit and not vllm_engine.on_cuda():
        raise FastmathError(
            "grpo.use_vllm: vLLM's CPU build has no 4-bit base, so rollouts would come from a different model "
            "than the one trained: set grpo.use_vllm=false, or model.load_in_4bit=false"
        )


def start(trainer, recipe: Recipe):
    """The trainer's vLLM generation backend: TRL's `VLLMGeneration` settings, the adapter synced."""
    from trl.generation.vllm_generation import VLLMGeneration
    from vllm import LLM
    from vllm.lora.request import LoRARequest

    from fastmath.models import torch_dtype
    from fastmath.vllm_engine import host_memory_settings, lora_rank, on_cuda

    class AdapterLLM(LLM):
        """vLLM's engine serving `adapter` to every request that names no adapter of its own
        (TRL's rollouts name none); `served` lists the adapter id of each call."""

        adapter: Any = None
        served: list[int]

        def generate(self, *args, lora_request=None, **kwargs):
            request = lora_request or self.adapter
            self.served.append(request.lora_int_id)
            return super().generate(*args, lora_request=request, **kwargs)

    class AdapterSync(VLLMGeneration):
        """TRL's colocated vLLM with `sync_weights` saving the adapter instead of merging it in."""

        synced = 0  # adapters handed to vLLM so far; the newest is `folder/sync-<synced>`
        sync_s = 0.0  # seconds the latest sync took (saving the adapter; vLLM loads it at the next rollout)

        def _init_vllm(self) -> None:
            if self.mode != "colocate" or self.tensor_parallel_size != 1:
                raise FastmathError("grpo.use_vllm: only colocated vLLM with tensor parallel 1 is supported")
            self.folder = tempfile.TemporaryDirectory(prefix="fastmath-rollout-adapter-")  # removed at exit
            first = self._save()
            engine: dict[str, Any] = {
                "model": recipe.model.name,
                "revision": recipe.model.revision,
                "dtype": str(torch_dtype(recipe.model)).removeprefix("torch."),
                "quantization": "bitsandbytes" if recipe.model.load_in_4bit and on_cuda() else None,
                "max_model_len": self.max_model_length,
                "max_num_seqs": self.max_num_seqs,
                "seed": recipe.training.seed,
                "logprobs_mode": "processed_logprobs",  # TRL's: sampling logprobs after temperature, for its IS ratio
                "generation_config": "vllm",
                "enable_lora": True,
                "max_lora_rank": lora_rank(str(first.lora_path)),
                "max_loras": 1,
                # TRL's share of the GPU; on CPU a fraction of host memory (vLLM's 0.92 default fails there)
                "gpu_memory_utilization": self.gpu_memory_utilization,
                **host_memory_settings(),
            }
            self.llm = AdapterLLM(**engine)
            self.llm.served, self.llm.adapter = [], first

        def _save(self):
            start_s = time.perf_counter()
            self.synced += 1
            path = Path(self.folder.name) / f"sync-{self.synced}"
            self.model.save_pretrained(str(path))
            shutil.rmtree(path.with_name(f"sync-{self.synced - 1}"), ignore_errors=True)  # served no more
            self.sync_s = time.perf_counter() - start_s
            return LoRARequest(f"sync-{self.synced}", self.synced, str(path))

        def sync_weights(self) -> None:
            self.llm.adapter = self._save()

    args = trainer.args
    return AdapterSync(
        model=trainer.model, accelerator=trainer.accelerator, processing_class=trainer.processing_class,
        mode=args.vllm_mode, tensor_parallel_size=args.vllm_tensor_parallel_size,
        gpu_memory_utilization=args.vllm_gpu_memory_utilization, max_model_length=args.vllm_max_model_length,
        max_num_seqs=args.per_device_train_batch_size * args.vllm_tensor_parallel_size * args.steps_per_generation,
        repetition_penalty=trainer.repetition_penalty, temperature=trainer.temperature, top_p=trainer.top_p,
        top_k=trainer.top_k, min_p=trainer.min_p, max_completion_length=trainer.max_completion_length,
        logprobs=0, generation_kwargs=args.generation_kwargs,
    )  # fmt: skip
