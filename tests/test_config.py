"""Recipes: typed keys, overrides, the seed's flag aliases, and errors that say what to fix."""

import pytest
import yaml

from fastmath.config import load_recipe, parse_overrides, save_recipe
from fastmath.errors import FastmathError

from .conftest import REPO, fastmath_cli


def test_shipped_recipes_parse_with_the_documented_values():
    r = load_recipe(REPO / "recipes" / "qwen2.5-7b-sft.yaml")
    assert (r.model.name, r.model.load_in_4bit, r.lora.r, r.lora.alpha) == ("Qwen/Qwen2.5-7B-Instruct", True, 16, 32)
    assert (r.training.num_epochs, r.training.batch_size, r.training.learning_rate) == (3.0, 4, 2e-4)
    for path in (REPO / "recipes").glob("*.yaml"):
        load_recipe(path)


def test_overrides_and_seed_aliases_are_typed():
    o = parse_overrides(["training.num_epochs=1", "lora.r=8", "--batch_size", "2", "--model_name", "m/x"])
    r = load_recipe(REPO / "recipes" / "qwen2.5-7b-sft.yaml", o)
    assert r.training.num_epochs == 1.0 and isinstance(r.training.num_epochs, float)
    assert (r.lora.r, r.training.batch_size, r.model.name) == (8, 2, "m/x")
    r = load_recipe(None, parse_overrides(["eval.strategies=cot,few_shot", "data.limit=null"]))
    assert r.eval.strategies == ["cot", "few_shot"] and r.data.limit is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"lora.rank": 8}, "did you mean 'lora.r'"),
        ({"trainng.batch_size": 8}, "did you mean 'training'"),
        ({"training.learning_rat": 1e-4}, "did you mean 'training.learning_rate'"),
        ({"training.batch_size": "four"}, "'training.batch_size' must be int, got str 'four'"),
        ({"training.batch_size": True}, "must be int"),
        ({"model.backend": "vllm"}, "must be one of auto, unsloth, hf"),
    ],
)
def test_bad_keys_and_types_name_the_key_and_the_fix(override, message):
    with pytest.raises(FastmathError, match=message):
        load_recipe(None, override)


def test_bad_yaml_file_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  name: [unclosed\n")
    with pytest.raises(FastmathError, match="not valid YAML"):
        load_recipe(bad)
    with pytest.raises(FastmathError, match="not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_saved_recipe_round_trips(tmp_path):
    r = load_recipe(REPO / "recipes" / "tiny-sft.yaml", {"lora.r": 4})
    save_recipe(r, tmp_path / "recipe.yaml")
    assert load_recipe(tmp_path / "recipe.yaml") == r
    assert yaml.safe_load((tmp_path / "recipe.yaml").read_text())["lora"]["r"] == 4


def test_cli_unknown_key_is_a_short_error_not_a_traceback():
    p = fastmath_cli("sft", "recipes/tiny-sft.yaml", "lora.rank=8", timeout=120)
    assert p.returncode == 2
    assert "unknown recipe key 'lora.rank'; did you mean 'lora.r'?" in p.stderr
    assert "Traceback" not in p.stderr
