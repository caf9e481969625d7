"""GRPO's rewards chosen by name with weights (`grpo.rewards`), or a user's own function by its dotted path."""

from __future__ import annotations

import pytest

from fastmath.cli import parse_overrides
from fastmath.config import load_recipe
from fastmath.errors import FastmathError
from fastmath.train.rewards import Overlong, answer_format, correctness, reward_functions


def test_rewards_are_named_with_weights_and_a_zero_weight_leaves_one_out():
    g = load_recipe(None).grpo
    assert reward_functions(g) == ([correctness, answer_format], [1.0, 0.2])  # the defaults
    typed = parse_overrides(["grpo.rewards={correctness: 2, overlong: 0.5, answer_format: 0}"])  # as typed
    g = load_recipe(None, typed).grpo
    funcs, weights = reward_functions(g)
    assert funcs[0] is correctness and isinstance(funcs[1], Overlong) and weights == [2.0, 0.5]
    assert funcs[1](completion_ids=[[0] * g.max_completion_length]) == [-1.0], "the penalty, full at the limit"


def test_a_users_own_reward_by_dotted_path(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(
        "def brevity(completions, **_):\n    return [1.0 / (1 + len(str(c))) for c in completions]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    g = load_recipe(None, {"grpo.rewards": {"correctness": 1.0, "my_rewards.brevity": 0.1}}).grpo
    funcs, weights = reward_functions(g)
    assert [f.__name__ for f in funcs] == ["correctness", "brevity"] and weights == [1.0, 0.1]
    assert funcs[1](completions=["abc"]) == [0.25]


@pytest.mark.parametrize(
    ("rewards", "message"),
    [
        ({"corectness": 1.0}, "unknown reward 'corectness'; use correctness, answer_format, overlong"),
        ({"no_such_module.f": 1.0}, "cannot load 'no_such_module.f' .*ModuleNotFoundError"),
        ({"correctness": 0.0}, "every weight is 0"),
    ],
)
def test_bad_rewards_are_one_message_naming_them(rewards, message):
    with pytest.raises(FastmathError, match=message):
        reward_functions(load_recipe(None, {"grpo.rewards": rewards}).grpo)


def test_rewards_must_be_a_mapping_of_numbers():
    with pytest.raises(FastmathError, match="grpo.rewards' must be a mapping"):
        load_recipe(None, {"grpo.rewards": "correctness"})
    with pytest.raises(FastmathError, match="grpo.rewards.correctness' must be float"):
        load_recipe(None, {"grpo.rewards": {"correctness": "high"}})
