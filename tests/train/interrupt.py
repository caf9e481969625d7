"""A training interrupted as Ctrl-C interrupts it, at a chosen step: what resume tests start from, and
how far a resumed run's adapter ends from an uninterrupted one's."""

from pathlib import Path

from transformers import TrainerCallback

WEIGHTS = "adapter_model.safetensors"


class Interrupt(TrainerCallback):
    """Raise KeyboardInterrupt (what Ctrl-C raises) at the end of step `at` (after that step's checkpoint)."""

    def __init__(self, at: int):
        self.at = at

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at:
            raise KeyboardInterrupt


def adapter_difference(resumed: Path, uninterrupted: Path) -> float:
    """The largest difference between two runs' adapter tensors, as a share of the tensor's largest value."""
    from safetensors.torch import load_file

    a, b = load_file(resumed / WEIGHTS), load_file(uninterrupted / WEIGHTS)
    assert a.keys() == b.keys() and all(a[k].dtype == b[k].dtype for k in a), "the same adapter tensors and dtypes"
    return max(float((a[k].float() - b[k].float()).abs().max() / b[k].float().abs().max()) for k in a)
