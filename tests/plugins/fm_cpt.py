"""A stage from outside fastmath (one module plus its registry record, `STAGE`): continued
pretraining, the language-model loss over each problem and its worked solution as plain text."""

from __future__ import annotations

from dataclasses import dataclass

from fastmath.config import AT_LEAST_1, NON_NEGATIVE, POSITIVE, key
from fastmath.stages import Stage


@dataclass
class CPTConfig:
    num_epochs: float = key(1.0, "CPT: passes over the text", range=NON_NEGATIVE, schedule=True)
    max_steps: int = key(-1, "CPT: optimizer steps; > 0 overrides num_epochs", schedule=True)
    batch_size: int = key(4, "CPT: texts per device per step", range=AT_LEAST_1, schedule=True)
    learning_rate: float = key(1e-4, "CPT: peak learning rate", range=POSITIVE, schedule=True)


def main(inv) -> int:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from fastmath import runs
    from fastmath.data import load_problems
    from fastmath.models import load_for_training
    from fastmath.train.trainer import train, trainer_args

    recipe, d = inv.recipe, inv.recipe.data
    problems = load_problems(d.train, d.split, d.subset, d.limit, d.language)
    model, tokenizer = load_for_training(recipe.model, recipe.lora, inv.backend, seed=recipe.training.seed)
    dataset = Dataset.from_list([{"text": f"{p.question}\n{p.target()}"} for p in problems])
    run_dir = inv.resume or runs.create(recipe, "cpt")
    with runs.marking_failure(run_dir):
        args = SFTConfig(**trainer_args(recipe, run_dir, inv.backend, "cpt"), max_length=recipe.model.max_seq_length)
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    info = {"stage": "cpt", "backend": inv.backend, "base_model": recipe.model.name, "examples": len(dataset)}
    train(trainer, tokenizer, run_dir, info, resume=inv.resume is not None)
    return 0


STAGE = Stage(
    "cpt",
    "fm_cpt:main",
    "continued pretraining on the problems as plain text",
    ("model", "lora", "data", "training", "cpt"),
    schedule="cpt",
    section=CPTConfig,
)
