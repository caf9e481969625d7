"""Model backends: Unsloth, or transformers + PEFT, and the checks before a load.

Unsloth runs its fused 4-bit LoRA kernels on a CUDA GPU and, since 2026.10.9, a CPU backend
elsewhere. QLoRA's 4-bit base (bitsandbytes NF4) loads on both backends wherever bitsandbytes
runs, CUDA and its CPU backend alike, so the 4-bit path a GPU user takes is the one CI tests.
`import unsloth` patches trl and transformers as it loads, so it must come before
anything imports them: the command line resolves the backend and calls `activate` before it
imports the command's module (`fastmath.cli`), and `activate` refuses if they are already
loaded, so no import order elsewhere can silently break that. Both backends hand the same kind
of PEFT model to the same TRL trainers, loaded in the recipe's dtype.

A model directory or adapter that cannot load is found here, in milliseconds and with a message
naming the fix, before a run directory exists, rather than as a traceback from deep in a loader.
"""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import sys
from pathlib import Path
from typing import Any

from fastmath import hub
from fastmath.config import EvalConfig, LoraConfig, ModelConfig
from fastmath.errors import FastmathError
from fastmath.log import log
from fastmath.resources import cache_dir

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


# What `import unsloth` patches; it must be imported before any of them.
PATCHED_BY_UNSLOTH = ("trl", "transformers", "peft")


def resolve_backend(cfg: ModelConfig) -> str:
    """`auto` = Unsloth in a single process wherever it is installed, else hf.

    On a CPU too: bench/backend_throughput.py measures Unsloth's CPU backend faster than hf for
    the tiny SFT (its chunked cross-entropy skips the LM head where no label is). Several
    processes (DDP) take hf: Unsloth trains one. So does a process that already loaded
    transformers without Unsloth (the app after it loaded an hf run's model).
    """
    installed = importlib.util.find_spec("unsloth") is not None
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if cfg.backend == "unsloth":
        if not installed:
            raise FastmathError("model.backend=unsloth but unsloth is not installed: run `make install`")
        if distributed:
            raise FastmathError("model.backend=unsloth trains one process; use model.backend=hf for DDP")
        return "unsloth"
    if cfg.backend == "hf":
        return "hf"
    if installed and not distributed and _too_late_for_unsloth():
        log.warning("model.backend=auto takes hf: this process loaded transformers before Unsloth (restart it)")
        return "hf"
    return "unsloth" if installed and not distributed else "hf"


def _too_late_for_unsloth() -> bool:
    """Whether this process already imported what Unsloth patches, without Unsloth (a long-running app)."""
    return "unsloth" not in sys.modules and any(name in sys.modules for name in PATCHED_BY_UNSLOTH)


def activate(backend: str) -> None:
    """Import Unsloth before trl/transformers/peft so its patches apply (a no-op on the hf backend)."""
    if backend != "unsloth" or "unsloth" in sys.modules:
        return
    if _too_late_for_unsloth():
        early = [name for name in PATCHED_BY_UNSLOTH if name in sys.modules]
        raise FastmathError(
            f"model.backend=unsloth, but this process already loaded {', '.join(early)} without Unsloth's "
            "patches; start a new process (restart the app) to use Unsloth"
        )
    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")  # no call home from a training run
    os.environ.setdefault("UNSLOTH_COMPILE_LOCATION", str(cache_dir() / "unsloth_compiled_cache"))  # not the cwd
    import unsloth  # noqa: F401


def ready_backend(cfg: ModelConfig) -> str:
    """The backend `cfg` resolves to, made ready (Unsloth imported first): what every entry point
    that loads a model calls before it imports the code that loads it. A 4-bit load that cannot
    happen is refused here, before anything is written."""
    use_4bit(cfg)
    backend = resolve_backend(cfg)
    activate(backend)
    return backend


def torch_dtype(cfg: ModelConfig):
    import torch

    if cfg.dtype != "auto":
        return getattr(torch, cfg.dtype)
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def use_4bit(cfg: ModelConfig) -> bool:
    """Whether the base loads in 4-bit: as the recipe says, on CUDA and on CPU alike (bitsandbytes'
    CPU backend). Without bitsandbytes a 4-bit recipe is refused with the fix, never silently
    trained in full precision."""
    if cfg.load_in_4bit and importlib.util.find_spec("bitsandbytes") is None:
        raise FastmathError(
            "model.load_in_4bit=true needs bitsandbytes: run `make install` (or set model.load_in_4bit=false)"
        )
    return cfg.load_in_4bit


def quantization(model) -> dict[str, Any] | None:
    """What a loaded model's 4-bit quantization is (None: not quantized), as a run's summary records it."""
    config = getattr(model.config, "quantization_config", None)
    if config is None:
        return None
    config = config if isinstance(config, dict) else config.to_dict()
    if not config.get("load_in_4bit"):
        return {"method": config.get("quant_method", "?")}
    return {
        "quant_type": config.get("bnb_4bit_quant_type"),
        "double_quant": config.get("bnb_4bit_use_double_quant"),
        "compute_dtype": str(config.get("bnb_4bit_compute_dtype")).removeprefix("torch."),
    }


def loaded_dtype(model) -> str:
    """What the base model ran in, as a run's summary records it: its weights' dtype (`float32`), or
    for a 4-bit base the storage and the compute dtype (`nf4 (compute bfloat16)`): its first parameter
    is then a 4-bit weight's uint8 storage or an embedding upcast by k-bit preparation, neither of which ran."""
    quant = quantization(model)
    if quant and quant.get("quant_type"):
        return f"{quant['quant_type']} (compute {quant['compute_dtype']})"
    return str(model.dtype).removeprefix("torch.")


# --- checks before loading ------------------------------------------------------------------------


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise FastmathError(f"{what} {path} is unreadable or not valid JSON ({e}); restore or re-download it") from None
    if not isinstance(data, dict):
        raise FastmathError(f"{what} {path} must hold a JSON object; restore or re-download it")
    return data


def check_model_dir(name: str) -> None:
    """A local model directory must have a config, weights and a tokenizer; hub ids are checked by `hub`."""
    path = Path(name).expanduser()
    if not path.is_dir():
        return
    fix = f"download a complete model there (hf download <repo> --local-dir {name}) or point model.name elsewhere"
    if not any(path.iterdir()):
        raise FastmathError(f"model directory {name} is empty: {fix}")
    if not (path / "config.json").is_file():
        raise FastmathError(f"model directory {name} has no config.json: {fix}")
    config = _read_json(path / "config.json", "model config")
    if "model_type" not in config:
        raise FastmathError(f"model config {path / 'config.json'} names no model_type: {fix}")
    if not any(p.suffix in WEIGHT_SUFFIXES for p in path.iterdir()):
        raise FastmathError(f"model directory {name} has no weights (*.safetensors): {fix}")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise FastmathError(f"model directory {name} has no tokenizer files ({', '.join(TOKENIZER_FILES)}): {fix}")


def safetensors_header(path: Path) -> dict[str, Any] | None:
    """The JSON header of a .safetensors file (tensor name -> dtype, shape, data_offsets), if it is whole.

    None when the header is cut or unreadable, or when its tensors do not fit in the file.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        length = struct.unpack("<Q", raw)[0] if len(raw) == 8 else -1
        header = f.read(length) if 0 < length <= size - 8 else b""
    try:
        tensors = json.loads(header) if header else None
    except ValueError:
        return None
    if not isinstance(tensors, dict):
        return None
    end = max((t["data_offsets"][1] for k, t in tensors.items() if k != "__metadata__"), default=-1)
    return tensors if 8 + length + end <= size else None


def _check_safetensors(path: Path) -> None:
    """The header of a .safetensors file must be whole and its tensors must fit in the file."""
    if safetensors_header(path) is None:
        raise FastmathError(
            f"{path} is truncated or corrupt ({path.stat().st_size} bytes); retrain the run or restore the file"
        )


def check_adapter(run: Path) -> None:
    """An adapter directory must hold a readable adapter config and whole weights."""
    _read_json(run / "adapter_config.json", "adapter config")
    weights = run / "adapter_model.safetensors"
    if not weights.is_file():
        raise FastmathError(f"{run} has adapter_config.json but no adapter_model.safetensors; retrain the run")
    _check_safetensors(weights)


def load_adapter(model, adapter: str, **kwargs: Any):
    """PEFT's load, with an adapter that does not fit the base model reported as such."""
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, adapter, **kwargs)
    except (RuntimeError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise FastmathError(
            f"adapter {adapter} does not fit base model {model.config.name_or_path} ({first}); "
            "load it with the base model it was trained on (its recipe.yaml names it)"
        ) from None


# --- loading --------------------------------------------------------------------------------------


def _checked_source(cfg: ModelConfig, adapter: str | None) -> str:
    """Where the base model loads from, resolved once for the whole load (`hub.resolve`: a local
    folder, a reachable hub id or the cached snapshot), with the model folder and adapter checked."""
    source = hub.resolve(cfg.name, revision=cfg.revision)
    check_model_dir(cfg.name)
    if adapter is not None:
        check_adapter(Path(adapter))
    return source


def load_tokenizer(cfg: ModelConfig, source: str | None = None):
    """`cfg.name`'s tokenizer, from `source` when the caller resolved the name already (`hub.resolve`)."""
    from transformers import AutoTokenizer

    source = source or hub.resolve(cfg.name, revision=cfg.revision)
    tokenizer = AutoTokenizer.from_pretrained(source, revision=cfg.revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _hf_base(cfg: ModelConfig, source: str):
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
        import torch

        cuda = torch.cuda.is_available()  # bitsandbytes quantizes on the device the weights land on
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0")) if cuda else "cpu"}
    return AutoModelForCausalLM.from_pretrained(source, **kwargs)


def _unsloth_load(cfg: ModelConfig, source: str, adapter: str | None, gradient_checkpointing: bool):
    """Unsloth's loader, told everything: left to itself it picks bf16 on a CPU with AVX512-BF16
    and turns gradient checkpointing on for adapters."""
    from unsloth import FastLanguageModel

    return FastLanguageModel.from_pretrained(
        model_name=adapter or source,
        max_seq_length=cfg.max_seq_length,
        dtype=torch_dtype(cfg),
        load_in_4bit=use_4bit(cfg),
        revision=cfg.revision,
        use_gradient_checkpointing="unsloth" if gradient_checkpointing else False,
    )


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
    cfg: ModelConfig,
    lora: LoraConfig,
    backend: str,
    adapter: str | None = None,
    gradient_checkpointing: bool = True,
    seed: int = 42,
):
    """A trainable PEFT model and its tokenizer: a fresh LoRA, or `adapter` (a run) to continue.

    `seed` (the recipe's training.seed) fixes the fresh LoRA's initial weights, which would
    otherwise depend on whatever drew random numbers earlier in the process.
    """
    from transformers import set_seed

    source = _checked_source(cfg, adapter)
    set_seed(seed)
    if backend == "unsloth":
        from unsloth import FastLanguageModel

        model, tokenizer = _unsloth_load(cfg, source, adapter, gradient_checkpointing)
        if adapter is None:
            model = FastLanguageModel.get_peft_model(
                model,
                r=lora.r,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=lora.target_modules,
                bias="none",
                use_gradient_checkpointing="unsloth" if gradient_checkpointing else False,
                random_state=seed,
                max_seq_length=cfg.max_seq_length,
            )
        return model, tokenizer

    from peft import get_peft_model, prepare_model_for_kbit_training

    tokenizer = load_tokenizer(cfg, source)
    model = _hf_base(cfg, source)
    if use_4bit(cfg):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    if adapter is None:
        model = get_peft_model(model, peft_lora_config(lora))
    else:
        model = load_adapter(model, adapter, is_trainable=True)
    return model, tokenizer


def load_for_inference(cfg: ModelConfig, adapter: str | None, backend: str):
    """Base model (+ LoRA adapter) ready for generation, tokenizer padded on the left."""
    source = _checked_source(cfg, adapter)
    if backend == "unsloth":
        from unsloth import FastLanguageModel

        model, tokenizer = _unsloth_load(cfg, source, adapter, gradient_checkpointing=False)
        FastLanguageModel.for_inference(model)
    else:
        tokenizer = load_tokenizer(cfg, source)
        model = _hf_base(cfg, source)
        if adapter:
            model = load_adapter(model, adapter)
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


def load_for_generation(cfg: ModelConfig, eval_cfg: EvalConfig, adapter: str | None, backend: str):
    """What the generation engine runs on, by `eval.engine`: an HF model (`load_for_inference`) or a
    vLLM engine with the adapter un-merged (`vllm_engine`), and the tokenizer padded on the left."""
    from fastmath import vllm_engine

    if vllm_engine.resolve(eval_cfg.engine, cfg) == "hf":
        return load_for_inference(cfg, adapter, backend)
    source = _checked_source(cfg, adapter)
    tokenizer = load_tokenizer(cfg, source)
    tokenizer.padding_side = "left"
    return vllm_engine.load(cfg, eval_cfg, source, adapter), tokenizer
