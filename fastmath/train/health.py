"""GRPO health: is the run learning anything?

A GRPO step learns only from groups whose samples scored differently, and only from completions
that ended: the two ways a run silently learns nothing are completions clipped at
`grpo.max_completion_length` (every reward and gradient then zero) and groups whose samples all
score the same (all solved, or none). TRL logs both each step, `completions/clipped_ratio` and
`frac_reward_zero_std` (so they are in metrics.jsonl and every tracker); this callback watches them.

When either stays above its recipe limit (`grpo.max_clipped_fraction`, `grpo.max_zero_spread_fraction`)
for `grpo.stalled_steps` training steps, it warns once with the fix, and with `grpo.stop_when_stalled`
ends the run early (the stage then marks it `stalled`). The run's means and the verdict go into
summary.json under `health`.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from fastmath.config import GRPOConfig
from fastmath.log import log

# TRL's metric for each health fraction.
METRICS = {"clipped": "completions/clipped_ratio", "zero_spread": "frac_reward_zero_std"}


def fixes(g: GRPOConfig) -> dict[str, str]:
    return {
        "clipped": f"of completions were cut at grpo.max_completion_length={g.max_completion_length}: raise "
        "grpo.max_completion_length (or ask for shorter solutions)",
        "zero_spread": f"of groups had all {g.num_generations} samples score the same, so they teach nothing: "
        "raise grpo.temperature or grpo.num_generations, or train on problems the model solves sometimes "
        "(not always, not never); is it asked as it was trained (data.system_prompt)?",
    }


class Health(TrainerCallback):
    """Per logged step: the fractions, how long each has stayed above its limit, the warning, the stop.

    `info` is the summary the stage writes at the end: the run's health is added to it on train end.
    """

    def __init__(self, g: GRPOConfig, info: dict[str, Any]):
        self.limits = {"clipped": g.max_clipped_fraction, "zero_spread": g.max_zero_spread_fraction}
        self.g, self.info = g, info
        self.streak = dict.fromkeys(METRICS, 0)  # training steps in a row above the limit
        self.sums, self.steps = dict.fromkeys(METRICS, 0.0), 0
        self.last_step = 0
        self.stalled: str | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.last_step = state.global_step  # a resumed run counts from its checkpoint

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or any(key not in logs for key in METRICS.values()):
            return
        covered, self.last_step = state.global_step - self.last_step, state.global_step  # a log averages these
        values = {name: float(logs[key]) for name, key in METRICS.items()}
        self.steps += covered
        for name, value in values.items():
            self.sums[name] += value * covered
            self.streak[name] = self.streak[name] + covered if value > self.limits[name] else 0
        if values["zero_spread"] == 1.0 and state.global_step <= args.logging_steps:
            log.warning(f"step {state.global_step}: every group scored the same (mean reward "
                        f"{logs.get('reward', 0):.2f}): 100% {fixes(self.g)['zero_spread']}")  # fmt: skip
        over = [name for name in METRICS if self.streak[name] >= self.g.stalled_steps]
        if over and self.stalled is None:
            fix = fixes(self.g)
            self.stalled = f"GRPO is learning nothing: for {self.g.stalled_steps}+ steps " + "; and ".join(
                f"{100 * values[n]:.0f}% (limit {100 * self.limits[n]:.0f}%) {fix[n]}" for n in over
            )
            stop = " grpo.stop_when_stalled: ending the run (status stalled)." if self.g.stop_when_stalled else ""
            log.warning(f"step {state.global_step}: {self.stalled}.{stop}")
            control.should_training_stop = self.g.stop_when_stalled

    def on_train_end(self, args, state, control, **kwargs):
        means = {f"{name}_fraction": round(total / max(1, self.steps), 4) for name, total in self.sums.items()}
        self.info["health"] = {**means, "limits": self.limits, "stalled_steps": self.g.stalled_steps,
                               "stalled": self.stalled}  # fmt: skip
