"""Recipes: YAML files parsed into typed dataclasses, with `section.key=value` overrides.

The dataclasses below are the single source of truth for every recipe key: its type, its default,
its allowed values and what it means (the field's metadata, which `python -m fastmath sft --help`
prints, as TRL's config dataclasses do). The YAML files only say what differs. Unknown keys, wrong
types and values out of range are errors that name the key and the fix, because a silently ignored
typo (`lora.rank: 64`) or a `lora.r: 0` that crashes an hour later wastes a GPU-day.

Each stage reads its own sections (its record in `stages`); SFT's schedule is `training.num_epochs`,
`training.batch_size`, `training.learning_rate`, DPO's is `dpo.*`, and a run's saved recipe.yaml
holds only what its stage read, so it says exactly what ran.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fastmath import plugins, stages
from fastmath.errors import FastmathError
from fastmath.hub import looks_like_path
from fastmath.resources import SCHEME

# The built-in prompt strategies (`fastmath.eval.strategies` checks that it implements exactly these).
STRATEGY_NAMES = ("zero_shot", "few_shot", "cot", "zero_shot_cot", "structured_cot", "tot", "self_consistency", "pot")


def strategy_names() -> tuple[str, ...]:
    """The strategies a recipe may name: the built-in ones, then those of installed plugins."""
    return STRATEGY_NAMES + plugins.names(plugins.STRATEGIES)


# A finite number in decimal or exponent notation, as `learning_rate=2e-4` is typed.
DECIMAL = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
DEFAULT_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass(frozen=True)
class Range:
    """Allowed numbers: `low`/`high` bounds, each inclusive unless marked open."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def allows(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


AT_LEAST_1 = Range(1)
POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
FRACTION = Range(0, 1, high_open=True)


Choices = tuple[str, ...] | typing.Callable[[], tuple[str, ...]]


def key(default: Any, help: str, *, choices: Choices = (), range: Range | None = None, schedule=False) -> Any:
    """A recipe key: its default and metadata (help text, allowed values, or a function that lists
    them when plugins may add some; `schedule`: one of the per-stage training schedule keys)."""
    meta = {"help": help, "choices": choices, "range": range, "schedule": schedule}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    name: str = key("Qwen/Qwen2.5-7B-Instruct", "hub id or local model directory")
    revision: str | None = key(None, "hub revision (branch, tag or commit) of model.name")
    backend: str = key(
        "auto",
        "auto: Unsloth wherever it is installed (one process; its CPU backend without CUDA), else transformers + PEFT",
        choices=("auto", "unsloth", "hf"),
    )
    load_in_4bit: bool = key(True, "QLoRA: 4-bit NF4 base weights (bitsandbytes: CUDA and CPU)")
    max_seq_length: int = key(1024, "longest example in tokens; longer ones are dropped, never cut", range=AT_LEAST_1)
    dtype: str = key(
        "auto", "auto: bf16 where supported on CUDA, else fp32", choices=("auto", "bfloat16", "float16", "float32")
    )
    attn_implementation: str = key("sdpa", "transformers attention kernel (sdpa, eager, flash_attention_2)")


@dataclass
class LoraConfig:
    r: int = key(16, "LoRA rank", range=AT_LEAST_1)
    alpha: int = key(32, "LoRA scale numerator (scale = alpha / r)", range=AT_LEAST_1)
    dropout: float = key(0.0, "dropout on the LoRA input", range=FRACTION)
    target_modules: list[str] = key(DEFAULT_TARGET_MODULES, "linear layers that get an adapter")


@dataclass
class DataConfig:
    train: str = key(
        "openai/gsm8k",
        "a task's name (its train split), a hub dataset id, or a .jsonl/.json/.csv/.parquet/.tsv file "
        "(fastmath:samples/... ships)",
    )
    question_field: str = key("question", "the data file's question field (eval files, SFT, pairs, GRPO)")
    answer_field: str = key("answer", "its answer field: a bare gold, or a worked solution ending '#### N'")
    subset: str | None = key("main", "hub dataset config (GSM8K's is main)")
    split: str = key("train", "hub dataset split")
    limit: int | None = key(None, "first N usable records, for quick runs (null = all)", range=AT_LEAST_1)
    keep_calculator: bool = key(False, "keep GSM8K's <<48/2=24>> calculator marks in the targets")
    language: str = key("auto", "prompt and final-answer language", choices=("auto", "en", "zh"))
    system_prompt: str | None = key(None, "system prompt to train and answer with (null = the built-in one)")


@dataclass
class TrainingConfig:
    num_epochs: float = key(3.0, "SFT: passes over the data", range=NON_NEGATIVE, schedule=True)
    max_steps: int = key(-1, "SFT: optimizer steps; > 0 overrides num_epochs", schedule=True)
    batch_size: int = key(4, "SFT: examples per device per step", range=AT_LEAST_1, schedule=True)
    learning_rate: float = key(2e-4, "SFT: peak learning rate", range=POSITIVE, schedule=True)
    gradient_accumulation_steps: int = key(1, "steps whose gradients add up to one update", range=AT_LEAST_1)
    lr_scheduler: str = key("cosine", "transformers scheduler name (cosine, linear, constant, ...)")
    warmup_ratio: float = key(0.03, "share of the steps spent warming up", range=FRACTION)
    weight_decay: float = key(0.0, "AdamW weight decay", range=NON_NEGATIVE)
    max_grad_norm: float = key(1.0, "gradient clipping norm", range=POSITIVE)
    optim: str = key("auto", "optimizer; auto = adamw_8bit with 4-bit, else adamw_torch")
    batching: str = key(
        "auto",
        "padding_free: a batch's examples back to back in one row; packed: rows of max_seq_length; "
        "padded: classic; auto: padding_free where attention takes variable-length rows, else padded",
        choices=("auto", "padding_free", "packed", "padded"),
    )
    gradient_checkpointing: bool = key(True, "recompute activations in the backward pass to save memory")
    logging_steps: int = key(10, "log metrics every N steps", range=AT_LEAST_1)
    save_steps: int = key(200, "checkpoint every N steps (what --resume continues from)", range=AT_LEAST_1)
    save_total_limit: int = key(2, "checkpoints kept", range=AT_LEAST_1)
    seed: int = key(42, "random seed")
    output_dir: str = key("outputs", "runs are written to <output_dir>/<run_name>/")
    run_name: str | None = key(None, "the run's folder name (null = <stage>-<model>-<timestamp>)")
    report_to: list[str] = key(
        ["tensorboard"],
        "metrics loggers beside metrics.jsonl: tensorboard, mlflow ($MLFLOW_TRACKING_URI, else a SQLite file in "
        "output_dir), wandb (offline unless $WANDB_MODE=online), trackio (local), or none",
        choices=("tensorboard", "mlflow", "wandb", "trackio", "none"),
    )


@dataclass
class DPOConfig:
    sft_run: str | None = key(None, "SFT run whose adapter is aligned (null = the newest finished one)")
    pairs: str | None = key(None, "preference JSON/JSONL (null = <sft_run>/pairs.jsonl from `fastmath pairs`)")
    beta: float = key(0.1, "strength of the pull towards the SFT policy", range=POSITIVE)
    loss_type: str = key("sigmoid", "TRL DPO loss (sigmoid, ipo, hinge, ...)")
    num_epochs: float = key(1.0, "DPO: passes over the pairs", range=NON_NEGATIVE, schedule=True)
    max_steps: int = key(-1, "DPO: optimizer steps; > 0 overrides num_epochs", schedule=True)
    batch_size: int = key(2, "DPO: pairs per device per step", range=AT_LEAST_1, schedule=True)
    learning_rate: float = key(5e-6, "DPO: peak learning rate", range=POSITIVE, schedule=True)
    max_length: int = key(1024, "longest prompt + answer in tokens", range=AT_LEAST_1)
    samples_per_problem: int = key(4, "`fastmath pairs`: solutions sampled per problem", range=AT_LEAST_1)
    temperature: float = key(0.8, "`fastmath pairs`: sampling temperature", range=POSITIVE)
    problems: int | None = key(512, "`fastmath pairs`: training problems to sample (null = all)", range=AT_LEAST_1)


GRPO_LOSSES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo")


@dataclass
class GRPOConfig:
    sft_run: str | None = key(None, "SFT run whose adapter GRPO continues (null = the newest finished one)")
    fresh_lora: bool = key(False, "start from model.name with a fresh LoRA instead of an SFT run's adapter")
    problems: int | None = key(512, "training problems from data.train (null = all)", range=AT_LEAST_1)
    num_generations: int = key(8, "completions sampled per problem; rewards are compared within them", range=Range(2))
    max_completion_length: int = key(512, "longest completion in tokens", range=AT_LEAST_1)
    temperature: float = key(1.0, "sampling temperature of the rollouts", range=POSITIVE)
    beta: float = key(0.0, "KL penalty towards the starting policy (0 = none, no reference pass)", range=NON_NEGATIVE)
    loss_type: str = key("dapo", "TRL GRPO loss", choices=GRPO_LOSSES)
    num_epochs: float = key(1.0, "GRPO: passes over the problems", range=NON_NEGATIVE, schedule=True)
    max_steps: int = key(-1, "GRPO: optimizer steps; > 0 overrides num_epochs", schedule=True)
    batch_size: int = key(4, "GRPO: problems per device per step (x num_generations completions)",
                          range=AT_LEAST_1, schedule=True)  # fmt: skip
    learning_rate: float = key(5e-6, "GRPO: peak learning rate", range=POSITIVE, schedule=True)
    rewards: dict[str, float] = key(
        {"correctness": 1.0, "answer_format": 0.2},
        "reward functions and their weights: correctness, answer_format, overlong (DAPO's soft penalty), "
        "or module.function of your own (TRL's reward-function signature)",
    )
    overlong_buffer: int = key(64, "tokens before max_completion_length where the overlong penalty starts",
                               range=AT_LEAST_1)  # fmt: skip
    use_vllm: bool = key(False, "rollouts through vLLM (hf backend), the adapter handed over un-merged each step")
    max_clipped_fraction: float = key(0.5, "health: warn when more completions than this hit max_completion_length",
                                      range=Range(0, 1))  # fmt: skip
    max_zero_spread_fraction: float = key(0.9, "health: warn when more groups than this score all the same",
                                          range=Range(0, 1))  # fmt: skip
    stalled_steps: int = key(5, "health: steps a fraction must stay above its limit before the warning",
                             range=AT_LEAST_1)  # fmt: skip
    stop_when_stalled: bool = key(False, "end the run early, with status stalled, once the health warning fires")


@dataclass
class EvalConfig:
    datasets: list[str] = key(["gsm8k"], "tasks (gsm8k, mgsm_en, svamp, cmath, ...), task .yaml files or data files")
    strategies: list[str] = key(["cot"], "prompt strategies, in the order run", choices=strategy_names)
    samples: int | None = key(None, "first N problems of each dataset (null = all)", range=AT_LEAST_1)
    batch_size: int | None = key(None, "prompts per batch (null = found automatically)", range=AT_LEAST_1)
    max_new_tokens: int = key(512, "longest answer in tokens", range=AT_LEAST_1)
    num_shots: int = key(8, "few_shot: exemplars from the train split", range=NON_NEGATIVE)
    sc_samples: int = key(5, "self_consistency: samples voted on (maj@k)", range=AT_LEAST_1)
    temperature: float = key(0.7, "sampling temperature of self_consistency and ToT proposals", range=POSITIVE)
    seed: int = key(1234, "seed of few-shot exemplars and of every sample")
    tot_breadth: int = key(2, "ToT: states kept in the beam", range=AT_LEAST_1)
    tot_depth: int = key(6, "ToT: rounds (solution lines) at most", range=AT_LEAST_1)
    tot_proposals: int = key(2, "ToT: next lines sampled per state", range=AT_LEAST_1)
    engine: str = key(
        "auto",
        "generation engine: hf (transformers), vllm, or auto (vLLM where installed on CUDA, and on CPU for a "
        "16-bit model of 100M+ parameters; else hf)",
        choices=("auto", "hf", "vllm"),
    )
    tensor_parallel_size: int = key(1, "vllm: GPUs each model is split over", range=AT_LEAST_1)
    data_parallel_size: int = key(1, "vllm: model copies serving in parallel", range=AT_LEAST_1)
    unsafe_no_os_sandbox: bool = key(
        False, "pot without OS isolation (bubblewrap): model-written code then runs as you, held only in-process"
    )


@dataclass
class Recipe:
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        for name, cls in sections().items():  # the sections of stages from plugins
            if not hasattr(self, name):
                setattr(self, name, cls())

    def schedule(self, stage: str) -> Schedule:
        """The stage's own epochs, steps, batch size and learning rate."""
        section = getattr(self, schedule_section(stage) or "training")
        return Schedule(section.num_epochs, section.max_steps, section.batch_size, section.learning_rate)

    def to_dict(self, stage: str | None = None) -> dict[str, Any]:
        """Every key, or only the keys `stage` reads (what its run directory records)."""
        tree = {name: dataclasses.asdict(getattr(self, name)) for name in sections()}
        if stage is None:
            return tree
        kept = {name: tree[name] for name in stage_sections(stage)}
        for name, body in kept.items():
            section = getattr(self, name)
            for f in dataclasses.fields(section):
                if f.metadata["schedule"] and schedule_section(stage) != name:
                    del body[f.name]
        return kept


@dataclass(frozen=True)
class Schedule:
    num_epochs: float
    max_steps: int
    batch_size: int
    learning_rate: float


# What the commands that only read a model (eval, prompts, solve) read; stages read what their record says.
EVAL_SECTIONS = ("model", "data", "eval")


def sections() -> dict[str, type]:
    """Every recipe section's dataclass: the built-in ones, then those of plugin stages."""
    out: dict[str, Any] = {f.name: f.default_factory for f in dataclasses.fields(Recipe)}
    for stage in stages.registry().values():
        if stage.section is not None:
            out[stage.name] = stage.section
    return out


def stage_sections(stage: str) -> tuple[str, ...]:
    """The sections `stage` reads (`eval`: what the evaluating commands read)."""
    return EVAL_SECTIONS if stage == "eval" else stages.get(stage).sections


def schedule_section(stage: str) -> str | None:
    """The section that holds `stage`'s schedule keys (none for a stage that trains nothing)."""
    return None if stage == "eval" else stages.get(stage).schedule


def choices(f: dataclasses.Field) -> tuple[str, ...]:
    """A key's allowed values (none: any)."""
    allowed = f.metadata["choices"]
    return allowed() if callable(allowed) else allowed


def keys(names: tuple[str, ...], stage: str | None = None) -> list[tuple[str, dataclasses.Field, Any]]:
    """(`section.key`, field, type) of every key in sections `names`; with `stage`, the ones it reads."""
    out = []
    for name, cls in sections().items():
        if name not in names:
            continue
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.metadata["schedule"] and stage is not None and schedule_section(stage) != name:
                continue
            out.append((f"{name}.{f.name}", f, hints[f.name]))
    return out


def type_name(hint: Any) -> str:
    """`int`, `float`, `str | null`, `list[str]`: how --help names a key's type."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " | ".join("null" if a is type(None) else type_name(a) for a in typing.get_args(hint))
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(type_name(a) for a in typing.get_args(hint))}]"
    return hint.__name__


def value_text(value: Any) -> str:
    """A value as YAML writes it on one line (`null`, `0.005`, `[cot, pot]`, `'123'` for a string):
    how --help shows defaults, and `key=value` text that reads back as exactly this value."""
    text = yaml.safe_dump(value, default_flow_style=True, width=float("inf"), allow_unicode=True)
    return text.strip().removesuffix("...").strip()


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
    if origin is dict:  # `grpo.rewards={correctness: 1.0, answer_format: 0.2}`
        key_type, value_type = typing.get_args(hint)
        if not isinstance(value, dict):
            raise FastmathError(f"recipe key {key!r} must be a mapping such as {{name: 1.0}}, got {value!r}")
        return {_coerce(key, k, key_type): _coerce(f"{key}.{k}", v, value_type) for k, v in value.items()}
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str) and DECIMAL.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads `2e-4` (no dot) as a string; people write it so
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise FastmathError(f"recipe key {key!r} must be {hint.__name__}, got {type(value).__name__} {value!r}")
    if hint is float and not math.isfinite(value):  # YAML's .inf and .nan
        raise FastmathError(f"recipe key {key!r} must be a finite number, got {value!r}")
    return value


def apply(recipe: Recipe, key: str, value: Any) -> None:
    """Set `section.field` on `recipe`, checking the key's name, the value's type and its allowed values."""
    section_name, _, field_name = key.partition(".")
    names = sections()
    if section_name not in names or not field_name:
        raise FastmathError(f"unknown recipe section {section_name!r} in {key!r}{_suggest(section_name, names)}")
    section = getattr(recipe, section_name)
    fields = {f.name: f for f in dataclasses.fields(section)}
    if field_name not in fields:
        raise FastmathError(f"unknown recipe key {key!r}{_suggest(key, [f'{section_name}.{n}' for n in fields])}")
    meta = fields[field_name].metadata
    value = _coerce(key, value, typing.get_type_hints(type(section))[field_name])
    allowed = choices(fields[field_name])
    for item in value if isinstance(value, list) else [value]:
        if allowed and item not in allowed:
            raise FastmathError(f"recipe key {key!r} takes {', '.join(allowed)}; got {item!r}")
    if isinstance(value, (list, dict)) and not value:
        raise FastmathError(f"recipe key {key!r} needs at least one value")
    if meta["range"] is not None and value is not None and not meta["range"].allows(value):
        raise FastmathError(f"recipe key {key!r} must be {meta['range']}, got {value!r}")
    setattr(section, field_name, value)


def _flatten(tree: dict[str, Any], source: str) -> dict[str, Any]:
    flat = {}
    for section, body in tree.items():
        if not isinstance(body, dict):
            raise FastmathError(f"{source}: section {section!r} must be a mapping of keys, got {body!r}")
        flat.update({f"{section}.{k}": v for k, v in body.items()})
    return flat


def read_yaml(path: Path) -> dict[str, Any]:
    """A recipe file's sections; every way a file can be unusable is a short error."""
    if path.is_dir():
        raise FastmathError(f"recipe {path} is a directory; give a .yaml file, e.g. {path}/tiny-sft.yaml")
    if not path.is_file():
        raise FastmathError(f"recipe file {str(path)!r} not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise FastmathError(f"recipe {path} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except OSError as e:
        raise FastmathError(f"cannot read recipe {path}: {e.strerror}") from None
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise FastmathError(f"recipe {path} is not valid YAML: {e}") from None
    if tree is None:
        raise FastmathError(f"recipe {path} is empty; it must set at least model.name (see recipes/tiny-sft.yaml)")
    if not isinstance(tree, dict):
        raise FastmathError(f"recipe {path} must be a mapping of sections (model:, lora:, data:, training:)")
    return tree


# Keys that may name a local file or folder; relative ones are read from the working folder.
PATH_KEYS = (("model", "name"), ("data", "train"), ("dpo", "sft_run"), ("dpo", "pairs"), ("grpo", "sft_run"))


def absolute(name: str) -> str:
    """A local path made absolute, so what is saved resolves from any folder; hub ids and
    shipped files (`fastmath:...`) stay as they are."""
    path = Path(name).expanduser()
    if name.startswith(SCHEME) or not (path.exists() or looks_like_path(name)):
        return name
    return str(path.resolve())


def load_recipe(path: str | Path | None, overrides: dict[str, Any] | None = None) -> Recipe:
    """Defaults, then the YAML file, then command-line overrides, each key checked; local paths absolute."""
    recipe = Recipe()
    if path is not None:
        for key_, value in _flatten(read_yaml(Path(path)), str(path)).items():
            apply(recipe, key_, value)
    for key_, value in (overrides or {}).items():
        apply(recipe, key_, value)
    for section, name in PATH_KEYS:
        value = getattr(getattr(recipe, section), name)
        if value is not None:
            setattr(getattr(recipe, section), name, absolute(value))
    return recipe


def validate(recipe: Recipe, stage: str) -> None:
    """What no single key can say: a stage's schedule must train for at least one step."""
    section = schedule_section(stage)
    if section is None:
        return
    s = recipe.schedule(stage)
    if s.num_epochs <= 0 and s.max_steps <= 0:
        raise FastmathError(
            f"{section}.num_epochs={s.num_epochs:g} trains nothing: set {section}.num_epochs > 0 "
            f"or {section}.max_steps > 0"
        )


def save_recipe(recipe: Recipe, path: str | Path, stage: str) -> None:
    from fastmath.io import atomic_write_text

    tree = recipe.to_dict(stage)
    atomic_write_text(path, yaml.safe_dump(tree, sort_keys=False, allow_unicode=True))
