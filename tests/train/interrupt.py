"""A training interrupted as Ctrl-C interrupts it, at a chosen step: what resume tests start from."""

from transformers import TrainerCallback


class Interrupt(TrainerCallback):
    """Raise KeyboardInterrupt (what Ctrl-C raises) at the end of step `at` (after that step's checkpoint)."""

    def __init__(self, at: int):
        self.at = at

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at:
            raise KeyboardInterrupt
