"""A run's adapter merged into its base model: one plain checkpoint for transformers, vLLM and the converter.

Precision: the base is loaded unquantized in fp32 on the CPU, also for a QLoRA run (merging into
4-bit weights would round the sum; the 16-bit base is what gets shipped), PEFT's
`merge_and_unload` adds the adapter in fp32, and the sum is rounded once, to the export's dtype.
No GPU is needed; the price is RAM, about 4 bytes per parameter (a 7B model: about 30 GB).

Files: a merge changes the weights only, so every other file is the base model's own, byte for
byte (config.json too, but for its dtype): generation_config (EOS ids), tokenizer, chat template,
license. transformers 5 would rewrite them in its own dialect (rope_parameters without the
top-level rope_theta, extra_special_tokens as a list), which transformers 4 and vLLM read
differently; the model author's files read the same everywhere.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from fastmath import hub
from fastmath.config import ModelConfig
from fastmath.errors import FastmathError
from fastmath.models import check_adapter, check_model_dir, load_adapter, safetensors_header

# Everything of the base model's folder but its weights (and the hub's README, which describes the base).
BASE_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
    "LICENSE",
    "LICENSE.txt",
    "NOTICE",
)
TORCH_DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}


def base_dir(cfg: ModelConfig) -> Path:
    """The base model as a local folder with its safetensors weights (downloaded into the hub cache if needed)."""
    name = hub.resolve(cfg.name, revision=cfg.revision)
    if not Path(name).is_dir():
        from huggingface_hub import snapshot_download

        patterns = [*BASE_FILES, "*.safetensors", "*.safetensors.index.json"]
        name = snapshot_download(name, revision=cfg.revision, allow_patterns=patterns)
    check_model_dir(name)
    config = json.loads((Path(name) / "config.json").read_text(encoding="utf-8"))
    if config.get("quantization_config"):
        method = config["quantization_config"].get("quant_method", "?")
        raise FastmathError(
            f"base model {cfg.name} is stored quantized ({method}); a merged export needs its 16-bit original: "
            "point the run's recipe.yaml (model.name) at the unquantized model"
        )
    return Path(name)


def parameter_count(base: Path) -> int | None:
    """Parameters in the base's safetensors files, from their headers alone (None: no safetensors weights)."""
    headers = [safetensors_header(p) for p in sorted(base.glob("*.safetensors"))]
    if not headers or None in headers:
        return None
    return sum(math.prod(t["shape"]) for h in headers for k, t in h.items() if k != "__metadata__")  # type: ignore[union-attr]


def merged_model(run: Path, base: Path):
    """The base in fp32 with the run's adapter merged into it (PEFT's merge_and_unload)."""
    import torch
    from transformers import AutoModelForCausalLM

    check_adapter(run)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    return load_adapter(model, str(run)).merge_and_unload().eval()


def save(model, base: Path, out: Path, quant: str) -> None:
    """The merged weights in `quant`'s dtype (f32, f16, bf16), beside the base's own other files."""
    import torch

    dtype = TORCH_DTYPES[quant]
    model.to(getattr(torch, dtype)).save_pretrained(out)
    for name in BASE_FILES:
        if (base / name).is_file():
            shutil.copyfile(base / name, out / name)
    config = json.loads((base / "config.json").read_text(encoding="utf-8"))
    # transformers 5 writes `dtype`, 4 wrote `torch_dtype` (5 reads both): set the one the base has
    config.update({key: dtype for key in ("dtype", "torch_dtype") if key in config} or {"torch_dtype": dtype})
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
