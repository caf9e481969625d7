"""DPO alignment of an SFT run's adapter: recipe -> pairs -> SFT adapter -> TRL DPOTrainer -> run dir.

    python -m fastmath dpo recipes/qwen2.5-7b-dpo.yaml              # newest SFT run, its pairs.jsonl
    python -m fastmath dpo RECIPE dpo.sft_run=outputs/<sft> dpo.pairs=data/preference_data.json

The policy is the SFT adapter, trained further. The reference is that same SFT policy, frozen:
handed a PEFT model that already carries an adapter, TRL adds a copy of it named "ref" and
switches to it for the reference pass. That costs one more LoRA adapter (megabytes), not a
second copy of the base model (gigabytes, or a second 4-bit load), and unlike disabling the
adapter it keeps the reference equal to the SFT model rather than the base model.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fastmath import hub, rundir
from fastmath.config import Recipe, load_recipe, recipe_from_argv
from fastmath.errors import FastmathError
from fastmath.models import activate, resolve_backend
from fastmath.preferences import Pair, load_pairs
from fastmath.prompts import chat_messages

DEFAULT_RECIPE = "recipes/qwen2.5-7b-dpo.yaml"


def sft_parent(recipe: Recipe) -> Path:
    """The SFT run to align: `dpo.sft_run`, or the newest finished SFT run."""
    run = Path(recipe.dpo.sft_run) if recipe.dpo.sft_run else rundir.latest_run(recipe.training.output_dir, "sft")
    if not (run / "adapter_config.json").is_file():
        raise FastmathError(f"dpo.sft_run={run} holds no adapter (adapter_config.json); point it at a finished SFT run")
    return run


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


def run_dpo(recipe: Recipe, resume: Path | None = None, callbacks: tuple = ()) -> Path:
    """Align the SFT adapter on preference pairs as the recipe says; return the run directory."""
    sft_run = sft_parent(recipe)
    # The adapter fits only the base model it was trained on, and DPO trains that same adapter:
    # take the model name and the LoRA shape from the SFT run, so recipe.yaml records what ran.
    parent = load_recipe(sft_run / "recipe.yaml")
    recipe.model.name, recipe.lora = parent.model.name, parent.lora
    pairs = load_pairs(recipe.dpo.pairs or sft_run / "pairs.jsonl")
    hub.resolve(recipe.model.name)

    backend = resolve_backend(recipe.model)
    activate(backend)  # Unsloth first, before trl/transformers load
    from trl import DPOConfig, DPOTrainer

    from fastmath.models import load_for_training
    from fastmath.training import train, trainer_args

    model, tokenizer = load_for_training(
        recipe.model, recipe.lora, backend, adapter=str(sft_run),
        gradient_checkpointing=recipe.training.gradient_checkpointing,
    )  # fmt: skip
    run_dir = resume or rundir.create(recipe, "dpo", parent=sft_run.name)

    d = recipe.dpo
    schedule = dataclasses.replace(
        recipe.training, num_epochs=d.num_epochs, batch_size=d.batch_size, learning_rate=d.learning_rate
    )
    config = DPOConfig(
        **trainer_args(dataclasses.replace(recipe, training=schedule), run_dir, backend),
        beta=d.beta,
        loss_type=[d.loss_type],
        max_length=d.max_length,
    )
    dataset = dpo_dataset(pairs, recipe.data.system_prompt)
    trainer = DPOTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    info = {"stage": "dpo", "backend": backend, "base_model": recipe.model.name, "parent": sft_run.name}
    train(trainer, tokenizer, run_dir, {**info, "pairs": len(pairs)}, resume=resume is not None, callbacks=callbacks)
    return run_dir


def main(argv: list[str]) -> int:
    recipe, resume, _ = recipe_from_argv(argv, "dpo", DEFAULT_RECIPE)
    run_dpo(recipe, resume=resume)
    return 0
