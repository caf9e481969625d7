"""Model backends: Unsloth's fused 4-bit LoRA on one CUDA GPU, transformers + PEFT everywhere else.

`import unsloth` raises without a GPU and patches trl/transformers as it loads, so it is
imported here, lazily, and must come before anything imports trl: the commands call
`activate(backend)` first thing. Both backends hand the same kind of PEFT model to the same
TRL trainers.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from fastmath import hub
from fastmath.config import LoraConfig, ModelConfig
from fastmath.errors import FastmathError


def resolve_backend(cfg: ModelConfig) -> str:
    """`auto` = Unsloth on a single CUDA process when it is installed, else hf."""
    import torch

    cuda = torch.cuda.is_available()
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if cfg.backend == "unsloth":
        if not cuda:
            raise FastmathError("model.backend=unsloth needs a CUDA GPU; use model.backend=hf (or auto) here")
        if importlib.util.find_spec("unsloth") is None:
            raise FastmathError("model.backend=unsloth but unsloth is not installed: run `make install` on the GPU box")
        return "unsloth"
    if cfg.backend == "hf":
        return "hf"
    return "unsloth" if cuda and not distributed and importlib.util.find_spec("unsloth") else "hf"


def activate(backend: str) -> None:
    """Import Unsloth before trl/transformers so its patches apply (a no-op on the hf backend)."""
    if backend == "unsloth":
        import unsloth  # noqa: F401


def torch_dtype(cfg: ModelConfig):
    import torch

    if cfg.dtype != "auto":
        return getattr(torch, cfg.dtype)
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def use_4bit(cfg: ModelConfig) -> bool:
    """bitsandbytes 4-bit needs CUDA; on CPU the same recipe trains in full precision."""
    import torch

    return cfg.load_in_4bit and torch.cuda.is_available()


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hub.resolve(name))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _hf_base(cfg: ModelConfig):
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": torch_dtype(cfg), "attn_implementation": cfg.attn_implementation}
    if cfg.revision:
        kwargs["revision"] = cfg.revision
    if use_4bit(cfg):
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch_dtype(cfg),
        )
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    return AutoModelForCausalLM.from_pretrained(hub.resolve(cfg.name), **kwargs)


def peft_lora_config(lora: LoraConfig):
    from peft import LoraConfig as PeftLoraConfig

    return PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )


def load_for_training(
    cfg: ModelConfig, lora: LoraConfig, backend: str, adapter: str | None = None, gradient_checkpointing: bool = True
):
    """A trainable PEFT model and its tokenizer: a fresh LoRA, or `adapter` (an SFT run) to continue."""
    if backend == "unsloth":
        from unsloth import FastLanguageModel

        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=adapter or hub.resolve(cfg.name),
            max_seq_length=cfg.max_seq_length,
            dtype=None if cfg.dtype == "auto" else torch_dtype(cfg),
            load_in_4bit=cfg.load_in_4bit,
        )
        if adapter is None:
            model = FastLanguageModel.get_peft_model(
                model,
                r=lora.r,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=lora.target_modules,
                bias="none",
                use_gradient_checkpointing="unsloth" if gradient_checkpointing else False,
                max_seq_length=cfg.max_seq_length,
            )
        return model, tokenizer

    from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training

    tokenizer = load_tokenizer(cfg.name)
    model = _hf_base(cfg)
    if use_4bit(cfg):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    if adapter is None:
        model = get_peft_model(model, peft_lora_config(lora))
    else:
        model = PeftModel.from_pretrained(model, adapter, is_trainable=True)
    return model, tokenizer


def load_for_inference(cfg: ModelConfig, adapter: str | None = None, backend: str | None = None):
    """Base model (+ LoRA adapter) ready for generation, tokenizer padded on the left."""
    backend = backend or resolve_backend(cfg)
    activate(backend)
    if backend == "unsloth":
        from unsloth import FastLanguageModel

        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=adapter or hub.resolve(cfg.name),
            max_seq_length=cfg.max_seq_length,
            load_in_4bit=cfg.load_in_4bit,
        )
        FastLanguageModel.for_inference(model)
    else:
        tokenizer = load_tokenizer(cfg.name)
        model = _hf_base(cfg)
        if adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter)
            if not use_4bit(cfg):  # exact in full precision, and halves the matmuls per token
                model = model.merge_and_unload()
        if not use_4bit(cfg) and model.device.type == "cpu":
            import torch

            if torch.cuda.is_available():
                model = model.to("cuda")
        model.eval()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
