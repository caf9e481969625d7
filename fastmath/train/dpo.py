"""DPO alignment of an SFT run's adapter: recipe -> pairs -> SFT adapter -> TRL DPOTrainer -> run dir.

    python -m fastmath dpo recipes/qwen2.5-7b-dpo.yaml              # newest SFT run, its pairs.jsonl
    python -m fastmath dpo RECIPE dpo.sft_run=outputs/<sft> dpo.pairs=data/preference_data.json

The policy is the SFT adapter, trained further, with DPO's own schedule (`dpo.learning_rate`,
`dpo.num_epochs`, `dpo.batch_size`). The reference is that same SFT policy, frozen: handed a PEFT
model that already carries an adapter, TRL adds a copy of it named "ref" and switches to it for
the reference pass. That costs one more LoRA adapter (megabytes), not a second copy of the base
model (gigabytes, or a second 4-bit load), and unlike disabling the adapter it keeps the
reference equal to the SFT model rather than the base model.

The base model, its load settings, the LoRA shape and the system prompt come from the SFT run
(`fastmath.cli` takes them from there), so the saved recipe.yaml records what ran.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastmath import runs
from fastmath.config import Recipe
from fastmath.prompts import chat_messages
from fastmath.train.preferences import Pair, load_pairs


def dpo_dataset(pairs: list[Pair], system: str | None):
    """Conversational prompt/chosen/rejected rows: TRL applies the chat template like SFT's prompt."""
    from datasets import Dataset

    return Dataset.from_list(
        [
            {
                "prompt": chat_messages(p.prompt, p.lang, system),
                "chosen": [{"role": "assistant", "content": p.chosen}],
                "rejected": [{"role": "assistant", "content": p.rejected}],
            }
            for p in pairs
        ]
    )


def run_dpo(recipe: Recipe, sft_run: Path, backend: str, resume: Path | None = None, callbacks: tuple = ()) -> Path:
    """Align the SFT adapter on preference pairs as the recipe says; return the run directory."""
    pairs = load_pairs(recipe.dpo.pairs or sft_run / runs.PAIRS)
    from trl import DPOConfig, DPOTrainer

    from fastmath.models import load_for_training
    from fastmath.train.trainer import backend_changes, train, trainer_args

    model, tokenizer = load_for_training(
        recipe.model, recipe.lora, backend, adapter=str(sft_run),
        gradient_checkpointing=recipe.training.gradient_checkpointing, seed=recipe.training.seed,
    )  # fmt: skip
    recipe.dpo.sft_run = str(sft_run.resolve())
    run_dir = resume or runs.create(recipe, "dpo", parent=sft_run)
    with runs.marking_failure(run_dir):
        requested = dict(
            **trainer_args(recipe, run_dir, backend, "dpo"),
            beta=recipe.dpo.beta,
            loss_type=[recipe.dpo.loss_type],
            max_length=recipe.dpo.max_length,
        )
        config = DPOConfig(**requested)
        changed = backend_changes(requested, config)
        dataset = dpo_dataset(pairs, recipe.data.system_prompt)
        trainer = DPOTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    info: dict[str, Any] = {"stage": "dpo", "backend": backend, "base_model": recipe.model.name, "parent": sft_run.name}
    info |= {"pairs": len(pairs), "changed_by_backend": changed}
    train(trainer, tokenizer, run_dir, info, resume=resume is not None, callbacks=callbacks)
    return run_dir


def main(inv) -> int:
    run_dpo(inv.recipe, inv.parent, inv.backend, resume=inv.resume)
    return 0
