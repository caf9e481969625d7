"""Token counts follow the stage's record (`stages.Stage.batches`), not a guess from the batch's keys."""

from __future__ import annotations

import pytest
import torch

from fastmath import stages
from fastmath.train.trainer import COUNTERS, Counts


def test_every_stage_names_a_way_of_counting_and_each_way_counts_its_batches():
    assert {s.batches for s in stages.registry().values()} <= set(COUNTERS) == set(stages.BATCHES)
    assert [stages.get(n).batches for n in ("sft", "dpo", "grpo")] == ["labels", "completions", "rollouts"]

    sft = Counts("labels")  # one padded row of 4 with a pad, 2 trained positions
    sft.add({"input_ids": torch.ones(1, 4), "attention_mask": torch.tensor([[1, 1, 1, 0]]),
             "labels": torch.tensor([[-100, 5, 6, -100]])})  # fmt: skip
    assert sft.as_dict() == {"tokens": 3, "pad": 1, "trained": 2, "layouts": {"padded": 1}}

    dpo = Counts("completions")  # chosen and rejected rows, no pads, 3 completion positions
    dpo.add({"input_ids": torch.ones(2, 3), "completion_mask": torch.tensor([[0, 1, 1], [0, 0, 1]])})
    assert dpo.as_dict() == {"tokens": 6, "pad": 0, "trained": 3, "layouts": {"plain": 1}}

    grpo = Counts("rollouts")  # prompts and sampled completions, one completion padded
    grpo.add({"prompt_mask": torch.ones(2, 2), "completion_mask": torch.tensor([[1, 1], [1, 0]])})
    assert grpo.as_dict() == {"tokens": 7, "pad": 1, "trained": 3, "layouts": {"padded": 1}}


def test_a_batch_of_another_stage_is_an_error_not_a_silent_guess():
    with pytest.raises(KeyError, match="labels"):
        Counts("labels").add({"input_ids": torch.ones(1, 2), "completion_mask": torch.ones(1, 2)})
