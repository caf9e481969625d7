"""The stage registry: one record per stage, read by `config`, `cli`, `train/trainer`, the app and
the quickstart (torchtune's recipe registry is the model).

A stage is a command that reads recipe sections and writes or continues a run: its record says
which sections it reads, which holds its schedule (a stage with one trains a run of its own and
resumes), the run it continues, how its trainer's batches are counted and which metric groups the
app draws for it. A new stage is its module plus one record: here, or from another package
through the `fastmath.stages` entry point group (`plugins`), with a recipe section of its own.

No heavy imports here: the command line reads this before the backend is chosen.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastmath import plugins
from fastmath.errors import FastmathError


@dataclass(frozen=True)
class Option:
    """A command-line flag: an alias of a recipe `key`, or a plain option (argparse keyword arguments)."""

    flags: tuple[str, ...]
    help: str = ""
    key: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)


# The data file's field names, for every command that reads problems from a file (`tasks`).
FIELD_OPTIONS = (
    Option(("--question-field",), "the data file's question field", key="data.question_field"),
    Option(
        ("--answer-field",),
        "the data file's answer field (a gold, or a solution ending '#### N')",
        key="data.answer_field",
    ),
)

# How a trainer's batches are counted (`train/trainer.Counts`): `labels` (SFT: trained positions
# carry a label), `completions` (preference pairs: a completion mask), `rollouts` (GRPO: prompt
# and sampled completion masks, no input_ids).
BATCHES = ("labels", "completions", "rollouts")
# Charts every training run gets: a title, and the metrics.jsonl columns (names or patterns) drawn.
COMMON_METRICS: dict[str, tuple[str, ...]] = {"Loss": ("loss",), "Learning rate": ("learning_rate",)}


@dataclass(frozen=True)
class Stage:
    name: str  # also its command and run.json's `stage`
    target: str  # "module:function", imported only after the backend is active
    help: str
    sections: tuple[str, ...]  # recipe sections it reads (and its run's recipe.yaml records)
    schedule: str | None = None  # the section with its epochs/steps/batch/lr: it trains a run of its own
    section: type | None = None  # a dataclass for a recipe section of its own, named like the stage
    parent: str | None = None  # the stage of the run it continues
    parent_key: str | None = None  # recipe key naming that run (null: the newest finished one)
    fresh_key: str | None = None  # boolean recipe key that starts from the base model instead
    recipe: str | None = None  # shipped recipe used when none is given
    tiny_recipe: str | None = None  # the quickstart runs it with this recipe, in registry order
    batches: str = "labels"  # how its trainer's batches are counted (BATCHES)
    metrics: dict[str, tuple[str, ...]] = field(default_factory=dict)  # the app's charts beyond COMMON_METRICS
    options: tuple[Option, ...] = ()  # flags beyond the recipe keys

    @property
    def trains(self) -> bool:
        return self.schedule is not None


BUILTIN: tuple[Stage, ...] = (
    Stage(
        "sft",
        "fastmath.train.sft:main",
        "supervised fine-tuning (LoRA/QLoRA) from a recipe",
        ("model", "lora", "data", "training"),
        schedule="training",
        recipe="qwen2.5-7b-sft",
        tiny_recipe="tiny-sft",
        options=FIELD_OPTIONS,
    ),
    Stage(
        "pairs",
        "fastmath.train.pairs:main",
        "mine preference pairs from an SFT model's own solutions",
        ("model", "data", "dpo", "eval"),
        parent="sft",
        parent_key="dpo.sft_run",
        recipe="qwen2.5-7b-dpo",
        tiny_recipe="tiny-dpo",
        options=(
            Option(("--output",), "pairs file to write (default <sft run>/pairs.jsonl)", kwargs={"type": Path}),
            *FIELD_OPTIONS,
        ),
    ),
    Stage(
        "dpo",
        "fastmath.train.dpo:main",
        "DPO alignment of an SFT run's adapter",
        ("model", "lora", "data", "training", "dpo"),
        schedule="dpo",
        parent="sft",
        parent_key="dpo.sft_run",
        recipe="qwen2.5-7b-dpo",
        tiny_recipe="tiny-dpo",
        batches="completions",
        metrics={
            "DPO rewards": ("rewards/chosen", "rewards/rejected"),
            "DPO reward margin and accuracy": ("rewards/margins", "rewards/accuracies"),
        },
    ),
    Stage(
        "grpo",
        "fastmath.train.grpo:main",
        "GRPO: reinforcement learning on the grader's verdicts, from an SFT run's adapter",
        ("model", "lora", "data", "training", "grpo"),
        schedule="grpo",
        parent="sft",
        parent_key="grpo.sft_run",
        fresh_key="grpo.fresh_lora",
        recipe="qwen2.5-7b-grpo",
        tiny_recipe="tiny-grpo",
        options=FIELD_OPTIONS,
        batches="rollouts",
        metrics={
            "GRPO reward": ("reward", r"rewards/.+/mean"),
            "GRPO reward spread within a group": ("reward_std",),  # a spread, not a reward: its own axis
            "GRPO groups whose rewards all agree": ("frac_reward_zero_std",),
            "Completion length": ("completions/mean_length",),
            "KL to the reference": ("kl",),
        },
    ),
)


@functools.cache
def registry() -> dict[str, Stage]:
    """Every stage: the built-in ones, then those of installed plugins, by name."""
    stages = {s.name: s for s in BUILTIN}
    for name in plugins.names(plugins.STAGES):
        if name in stages:
            raise FastmathError(f"plugin stage {name!r} has the name of a built-in stage; rename it")
        stage = plugins.load(plugins.STAGES, name, Stage)
        if stage.batches not in BATCHES:
            raise FastmathError(f"plugin stage {name!r}: batches must be one of {', '.join(BATCHES)}")
        stages[name] = stage
    return stages


def get(name: str) -> Stage:
    stages = registry()
    if name not in stages:
        raise FastmathError(f"unknown stage {name!r}: expected one of {', '.join(stages)}")
    return stages[name]


def training() -> list[str]:
    """Stages that train a run of their own (and so resume)."""
    return [s.name for s in registry().values() if s.trains]


def metric_groups() -> dict[str, tuple[str, ...]]:
    """The app's charts for any run: the common ones, then each stage's."""
    groups = dict(COMMON_METRICS)
    for stage in registry().values():
        groups.update(stage.metrics)
    return groups
