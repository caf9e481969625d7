"""Recipes: YAML files parsed into typed dataclasses, with `section.key=value` overrides.

The dataclasses below are the single source of truth for every recipe key, its type and its
default (like TRL's config dataclasses); the YAML files only say what differs. Unknown keys
and wrong types are errors that name the key and suggest the fix, because a silently ignored
typo (`lora.rank: 64`) wastes a GPU-day.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fastmath.errors import FastmathError

DEFAULT_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class ModelConfig:
    name: str = "Qwen/Qwen2.5-7B-Instruct"  # hub id or local directory
    backend: str = "auto"  # auto | unsloth | hf; auto = unsloth on one CUDA GPU, else hf
    load_in_4bit: bool = True  # QLoRA; ignored on CPU, where bitsandbytes 4-bit does not run
    max_seq_length: int = 1024
    dtype: str = "auto"  # auto | bfloat16 | float16 | float32
    attn_implementation: str = "sdpa"
    revision: str | None = None


@dataclass
class LoraConfig:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_TARGET_MODULES))


@dataclass
class DataConfig:
    train: str = "openai/gsm8k"  # hub dataset id, or a local .jsonl / .json / .tsv file
    subset: str | None = "main"  # hub config name (GSM8K's is "main")
    split: str = "train"
    limit: int | None = None  # first N usable records (after cleaning), for quick runs
    keep_calculator: bool = False  # keep GSM8K's <<48/2=24>> annotations in targets
    language: str = "auto"  # auto | en | zh: language of prompts and of the final-answer line
    system_prompt: str | None = None  # None = the strategy's default


@dataclass
class TrainingConfig:
    num_epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides num_epochs
    batch_size: int = 4  # per device
    gradient_accumulation_steps: int = 1
    learning_rate: float = 2e-4
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    optim: str = "auto"  # auto = adamw_8bit with 4-bit on CUDA, else adamw_torch
    # padding_free: a batch's examples back to back in one row, no pads, attention kept apart;
    # packed: rows of max_seq_length filled best-fit (batch_size then counts rows); padded: classic;
    # auto: padding_free where attention takes variable-length rows (Unsloth, flash attention), else padded.
    batching: str = "auto"
    gradient_checkpointing: bool = True
    logging_steps: int = 10
    save_steps: int = 200
    save_total_limit: int = 2
    seed: int = 42
    output_dir: str = "outputs"  # runs are written to <output_dir>/<run_name>/
    run_name: str | None = None  # None = <stage>-<model>-<timestamp>
    report_to: str = "tensorboard"  # tensorboard | none


@dataclass
class DPOConfig:
    sft_run: str | None = None  # run directory of the SFT adapter to align; None = newest SFT run
    pairs: str | None = None  # preference JSON/JSONL; None = <sft_run>/pairs.jsonl from `fastmath pairs`
    beta: float = 0.1
    loss_type: str = "sigmoid"
    learning_rate: float = 5e-6
    num_epochs: float = 1.0
    batch_size: int = 2
    max_length: int = 1024
    samples_per_problem: int = 4  # `fastmath pairs`: solutions sampled per training problem
    temperature: float = 0.8  # `fastmath pairs`: sampling temperature
    problems: int | None = 512  # `fastmath pairs`: training problems to sample (None = all)


@dataclass
class EvalConfig:
    datasets: list[str] = field(default_factory=lambda: ["gsm8k"])  # gsm8k | mgsm_zh | mgsm_en | FILE
    strategies: list[str] = field(default_factory=lambda: ["cot"])
    samples: int | None = None  # first N problems; None = all
    batch_size: int | None = None  # None = found automatically (backs off on OOM)
    max_new_tokens: int = 512
    num_shots: int = 8  # exemplars for few-shot
    sc_samples: int = 5  # self-consistency: k samples for maj@k
    temperature: float = 0.7  # sampling temperature for self-consistency and ToT proposals
    seed: int = 1234
    tot_breadth: int = 2  # ToT: states kept in the beam
    tot_depth: int = 6  # ToT: rounds (solution lines) at most
    tot_proposals: int = 2  # ToT: next lines sampled per state; generations per problem <= 2*depth*breadth*proposals


@dataclass
class Recipe:
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# The seed project's flags, kept as aliases so old commands keep working.
FLAG_ALIASES = {
    "--model_name": "model.name",
    "--output_dir": "training.output_dir",
    "--epochs": "training.num_epochs",
    "--batch_size": "training.batch_size",
    "--learning_rate": "training.learning_rate",
}

CHOICES = {
    "model.backend": ("auto", "unsloth", "hf"),
    "model.dtype": ("auto", "bfloat16", "float16", "float32"),
    "data.language": ("auto", "en", "zh"),
    "training.batching": ("auto", "padding_free", "packed", "padded"),
    "training.report_to": ("tensorboard", "none"),
}


def _suggest(name: str, options: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(sorted(options))}"


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check `value` against the dataclass field type `hint`; ints are accepted for floats."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner)
    if origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, str):  # `eval.strategies=cot,few_shot` on the command line
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise FastmathError(f"recipe key {key!r} must be a list, got {value!r}")
        return [_coerce(key, v, item) for v in value]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise FastmathError(f"recipe key {key!r} must be {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def _apply(recipe: Recipe, key: str, value: Any) -> None:
    """Set `section.field` on `recipe`, validating the key's name and the value's type."""
    section_name, _, field_name = key.partition(".")
    sections = {f.name: f for f in dataclasses.fields(Recipe)}
    if section_name not in sections or not field_name:
        raise FastmathError(f"unknown recipe section {section_name!r} in {key!r}{_suggest(section_name, sections)}")
    section = getattr(recipe, section_name)
    hints = typing.get_type_hints(type(section))
    if field_name not in hints:
        full = [f"{section_name}.{n}" for n in hints]
        raise FastmathError(f"unknown recipe key {key!r}{_suggest(key, full)}")
    value = _coerce(key, value, hints[field_name])
    if key in CHOICES and value not in CHOICES[key]:
        raise FastmathError(f"recipe key {key!r} must be one of {', '.join(CHOICES[key])}, got {value!r}")
    setattr(section, field_name, value)


def _flatten(tree: dict[str, Any], source: str) -> dict[str, Any]:
    flat = {}
    for section, body in tree.items():
        if not isinstance(body, dict):
            raise FastmathError(f"{source}: section {section!r} must be a mapping of keys, got {body!r}")
        flat.update({f"{section}.{k}": v for k, v in body.items()})
    return flat


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """`key=value` pairs and the seed's `--flag value` aliases; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    it = iter(args)
    for arg in it:
        if arg in FLAG_ALIASES:
            raw = next(it, None)
            if raw is None:
                raise FastmathError(f"{arg} needs a value, e.g. {arg} 1")
            key = FLAG_ALIASES[arg]
        elif "=" in arg and not arg.startswith("-"):
            key, raw = arg.split("=", 1)
        else:
            raise FastmathError(
                f"cannot read argument {arg!r}: use section.key=value (e.g. training.num_epochs=1) "
                f"or one of {', '.join(FLAG_ALIASES)}"
            )
        out[key] = yaml.safe_load(raw) if raw != "" else None
    return out


def load_recipe(path: str | Path | None, overrides: dict[str, Any] | None = None) -> Recipe:
    """Defaults, then the YAML file, then command-line overrides."""
    recipe = Recipe()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FastmathError(f"recipe file {str(path)!r} not found; recipes live in recipes/*.yaml")
        try:
            tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise FastmathError(f"recipe {path} is not valid YAML: {e}") from None
        if not isinstance(tree, dict):
            raise FastmathError(f"recipe {path} must be a mapping of sections (model:, lora:, data:, training:)")
        for key, value in _flatten(tree, str(path)).items():
            _apply(recipe, key, value)
    for key, value in (overrides or {}).items():
        _apply(recipe, key, value)
    return recipe


def save_recipe(recipe: Recipe, path: str | Path) -> None:
    from fastmath.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(recipe.to_dict(), sort_keys=False, allow_unicode=True))


def recipe_from_argv(
    argv: list[str], command: str, default_recipe: str, output_flag: bool = False
) -> tuple[Recipe, Path | None, Path | None]:
    """`RECIPE [key=value ...]`, or `--resume RUN_DIR` (training), or `--output FILE` (pairs).

    Returns the recipe, the run directory to resume (or None) and the output path (or None).
    """
    parser = argparse.ArgumentParser(prog=f"python -m fastmath {command}", allow_abbrev=False)
    parser.add_argument("recipe", nargs="?", default=None, help=f"YAML recipe (default {default_recipe})")
    if output_flag:
        parser.add_argument("--output", type=Path, help="file to write")
    else:
        parser.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its last checkpoint")
    args, rest = parser.parse_known_args(argv)
    if args.recipe and "=" in args.recipe:  # `sft key=value` with no recipe file
        rest.insert(0, args.recipe)
        args.recipe = None
    overrides = parse_overrides(rest)
    output = getattr(args, "output", None)
    if not getattr(args, "resume", None):
        return load_recipe(args.recipe or default_recipe, overrides), None, output
    run_dir = Path(args.resume)
    if not (run_dir / "recipe.yaml").is_file():
        raise FastmathError(f"--resume {run_dir}: not a run directory (no recipe.yaml in it)")
    if overrides or args.recipe:
        raise FastmathError("--resume continues a run exactly as recorded; drop the recipe and key=value overrides")
    return load_recipe(run_dir / "recipe.yaml"), run_dir, None
