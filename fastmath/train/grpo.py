"""GRPO: reinforcement learning on the grader's verdicts, continuing an SFT run's adapter.

    python -m fastmath grpo recipes/qwen2.5-7b-grpo.yaml            # newest finished SFT run
    python -m fastmath grpo RECIPE grpo.sft_run=outputs/<sft> grpo.num_generations=8
    python -m fastmath grpo RECIPE grpo.fresh_lora=true             # a base model with a fresh LoRA
    python -m fastmath grpo --resume outputs/<run>

For each problem TRL's GRPOTrainer samples `num_generations` solutions, scores each with
fastmath's grader (`rewards`, chosen by name with weights in `grpo.rewards`: correctness, the
final-answer line, an optional overlong penalty, or a function of your own) and moves the
policy towards the solutions that scored above their group's mean. Two things make that work, and are kept here:

- The prompt is exactly the SFT/eval prompt (`prompts.chat_messages` with the run's system
  prompt, rendered by the tokenizer's chat template): asked any other way, a fine-tuned model
  rarely answers right and every reward is 0.
- A group whose samples all score the same teaches nothing (`frac_reward_zero_std`), nor does a
  completion cut at the length limit: `train.health` watches both, warns with the fix, and with
  `grpo.stop_when_stalled` ends the run early as `stalled`.

The model, load settings, LoRA shape and system prompt come from the SFT run (`fastmath.cli`).
Rollouts go through `model.generate`, or with `grpo.use_vllm` through vLLM (CUDA or its CPU build),
served the step's adapter un-merged (`vllm_rollouts`).
Each epoch's problem order depends only on (seed, epoch), so `--resume` repeats an uninterrupted
run exactly (TRL's own sampler gives a resumed run epoch 0's order again).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastmath import card, runs
from fastmath.config import Recipe
from fastmath.errors import FastmathError
from fastmath.log import log
from fastmath.prompts import chat_messages, prompt_text
from fastmath.tasks import training_problems
from fastmath.train import rewards, vllm_rollouts


def grpo_dataset(problems, tokenizer, recipe: Recipe):
    """Chat prompts (TRL applies the chat template, as SFT's prompts were), with `gold`, `lang` and
    `tolerance` (the task's, `grading.numbers_equal`) for the rewards.

    Problems whose prompt leaves no room for `max_completion_length` within `model.max_seq_length`
    are dropped and counted.
    """
    from datasets import Dataset

    room = recipe.model.max_seq_length - recipe.grpo.max_completion_length
    rows, too_long = [], 0
    for p in problems:
        messages = chat_messages(p.question, p.lang, recipe.data.system_prompt)
        if len(tokenizer(prompt_text(tokenizer, messages), add_special_tokens=False)["input_ids"]) > room:
            too_long += 1
            continue
        rows.append({"prompt": messages, "gold": p.gold, "lang": p.lang, "tolerance": p.tolerance})
    if too_long:
        log.warning(f"dropped {too_long} problem(s) whose prompt leaves under grpo.max_completion_length tokens")
    if not rows:
        raise FastmathError("no problem fits: raise model.max_seq_length or lower grpo.max_completion_length")
    return Dataset.from_list(rows)


def trainer_class():
    """TRL's GRPOTrainer (Unsloth's, once Unsloth is imported) with three additions, built after the
    backend is active: each epoch's order from (seed, epoch), where a step's time goes, and vLLM
    rollouts fed the adapter each step (`vllm_rollouts`) in place of TRL's merged-weight sync."""
    from trl import GRPOTrainer
    from trl.trainer.utils import RepeatSampler

    class EpochSeededSampler(RepeatSampler):
        """TRL's sampler, reseeded per epoch: a resumed run skips finished epochs without drawing them."""

        def set_epoch(self, epoch: int) -> None:
            if self.shuffle:
                self.generator.manual_seed((self.seed or 0) + epoch)

    class Trainer(GRPOTrainer):
        """Logs `timing/rollout_s` (sampling the completions), `timing/score_s` (rewards, log-probs,
        advantages) and with vLLM `timing/sync_s` (handing it the adapter) per step; TRL's own timers
        reach only wandb/mlflow, never metrics.jsonl."""

        def __init__(self, *args, recipe: Recipe | None = None, **kwargs):
            """With `recipe` and `use_vllm`, TRL builds no vLLM of its own (it would sync merged weights)."""
            config = kwargs["args"]
            synced = recipe if recipe is not None and config.use_vllm else None  # the recipe vLLM serves
            if synced is not None:
                config.use_vllm = False
            super().__init__(*args, **kwargs)
            if synced is not None:
                config.use_vllm = self.use_vllm = True
                self.vllm_generation = vllm_rollouts.start(self, synced)
                self._last_loaded_step = -1  # TRL's: sync before the first rollout of each step

        def _get_train_sampler(self, dataset=None):
            s = super()._get_train_sampler(dataset)
            return EpochSeededSampler(
                data_source=s.data_source, mini_repeat_count=s.mini_repeat_count, batch_size=s.batch_size,
                repeat_count=s.repeat_count, shuffle=s.shuffle, seed=s.seed,
            )  # fmt: skip

        def _generate_single_turn(self, *args, **kwargs):
            start = time.perf_counter()
            out = super()._generate_single_turn(*args, **kwargs)
            self._rollout_s = time.perf_counter() - start
            return out

        def _generate_and_score_completions(self, inputs):
            start, self._rollout_s = time.perf_counter(), 0.0
            if self.use_vllm:
                self.vllm_generation.sync_s = 0.0
            out = super()._generate_and_score_completions(inputs)
            metrics = self._metrics["train" if self.model.training else "eval"]
            if self.use_vllm:
                metrics["timing/sync_s"].append(self.vllm_generation.sync_s)
            metrics["timing/rollout_s"].append(self._rollout_s)
            metrics["timing/score_s"].append(time.perf_counter() - start - self._rollout_s)
            return out

    return Trainer


def grpo_trainer(recipe: Recipe, parent: Path | None, backend: str, resume: Path | None = None):
    """(the run's GRPO trainer, ready to train; its tokenizer; the run directory; the run's info)."""
    g = recipe.grpo
    funcs, weights = rewards.reward_functions(g)  # an unknown name or a broken own function fails here, first
    if g.use_vllm:
        vllm_rollouts.check(recipe, backend)
    problems = training_problems(recipe.data, g.problems)
    from trl import GRPOConfig

    from fastmath.models import load_for_training
    from fastmath.train.trainer import backend_changes, trainer_args

    model, tokenizer = load_for_training(
        recipe.model, recipe.lora, backend, adapter=str(parent) if parent else None,
        gradient_checkpointing=recipe.training.gradient_checkpointing, seed=recipe.training.seed,
    )  # fmt: skip
    dataset = grpo_dataset(problems, tokenizer, recipe)
    if parent is not None:
        g.sft_run = str(parent.resolve())
    run_dir = resume or runs.create(recipe, "grpo", parent=parent)
    with runs.marking_failure(run_dir):
        requested: dict[str, Any] = {
            **trainer_args(recipe, run_dir, backend, "grpo"),
            # TRL counts completions per device batch: batch_size problems, num_generations each
            "per_device_train_batch_size": g.batch_size * g.num_generations,
            "num_generations": g.num_generations,
            "max_completion_length": g.max_completion_length,
            "temperature": g.temperature,
            "beta": g.beta,
            "loss_type": g.loss_type,
            "reward_weights": weights,
            "mask_truncated_completions": False,
            "epsilon_high": None,
            "use_vllm": g.use_vllm,
            "vllm_mode": "colocate",
            "vllm_max_model_length": recipe.model.max_seq_length,  # grpo_dataset keeps prompts that fit
        }
        config = GRPOConfig(**requested)
        changed = backend_changes(requested, config)
        trainer = trainer_class()(
            model=model, reward_funcs=funcs, args=config, train_dataset=dataset, processing_class=tokenizer,
            recipe=recipe,
        )  # fmt: skip
    info = {"stage": "grpo", "backend": backend, "base_model": recipe.model.name, "examples": len(dataset)}
    info |= {"parent": parent.name if parent else None, "changed_by_backend": changed}
    return trainer, tokenizer, run_dir, info


def run_grpo(recipe: Recipe, parent: Path | None, backend: str, resume: Path | None = None, callbacks=()) -> Path:
    """Train the adapter with GRPO as the recipe says; return the run directory."""
    from fastmath.train.health import Health
    from fastmath.train.trainer import train

    g = recipe.grpo
    trainer, tokenizer, run_dir, info = grpo_trainer(recipe, parent, backend, resume)
    health = Health(g, info)
    train(trainer, tokenizer, run_dir, info, resume=resume is not None, callbacks=(health, *callbacks))
    if health.stalled and g.stop_when_stalled and trainer.is_world_process_zero():
        runs.stall(run_dir, health.stalled)
        card.write(run_dir)
    return run_dir


def main(inv) -> int:
    run_grpo(inv.recipe, inv.parent, inv.backend, resume=inv.resume)
    return 0
