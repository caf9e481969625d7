"""Recipes: typed keys, ranges, overrides, the seed's flag aliases, and errors that say what to fix."""

import pytest
import yaml

from fastmath.cli import parse_overrides
from fastmath.config import load_recipe, save_recipe, validate
from fastmath.errors import FastmathError

from .conftest import REPO, fastmath_cli


def test_shipped_recipes_parse_with_the_documented_values():
    r = load_recipe(REPO / "recipes" / "qwen2.5-7b-sft.yaml")
    assert (r.model.name, r.model.load_in_4bit, r.lora.r, r.lora.alpha) == ("Qwen/Qwen2.5-7B-Instruct", True, 16, 32)
    assert (r.training.num_epochs, r.training.batch_size, r.training.learning_rate) == (3.0, 4, 2e-4)
    for path in (REPO / "recipes").glob("*.yaml"):
        load_recipe(path)


def test_shipped_recipes_are_found_by_name_from_any_folder(tmp_path, monkeypatch):
    from fastmath.resources import recipe_path

    monkeypatch.chdir(tmp_path)
    for name in ("qwen2.5-7b-sft", "qwen2.5-7b-sft.yaml", "recipes/qwen2.5-7b-sft.yaml"):
        assert recipe_path(name).samefile(REPO / "recipes" / "qwen2.5-7b-sft.yaml"), name
    with pytest.raises(FastmathError, match="recipe 'elsewhere/tiny-sft.yaml' not found"):
        recipe_path("elsewhere/tiny-sft.yaml")


def test_overrides_and_seed_aliases_are_typed():
    o = parse_overrides(["training.num_epochs=1", "lora.r=8", "--batch_size", "2", "--model_name", "m/x"])
    r = load_recipe(REPO / "recipes" / "qwen2.5-7b-sft.yaml", o)
    assert r.training.num_epochs == 1.0 and isinstance(r.training.num_epochs, float)
    assert (r.lora.r, r.training.batch_size, r.model.name) == (8, 2, "m/x")
    r = load_recipe(None, parse_overrides(["eval.strategies=cot,few_shot", "data.limit=null"]))
    assert r.eval.strategies == ["cot", "few_shot"] and r.data.limit is None


def test_exponent_notation_without_a_dot_is_a_float(tmp_path):
    """YAML 1.1 (PyYAML) reads `2e-4` as a string; on the command line and in a recipe it is the number."""
    r = load_recipe(None, parse_overrides(["training.learning_rate=2e-4", "dpo.beta=1E-1", "grpo.temperature=+.7"]))
    assert (r.training.learning_rate, r.dpo.beta, r.grpo.temperature) == (2e-4, 0.1, 0.7)
    (tmp_path / "r.yaml").write_text("training:\n  learning_rate: 5e-5\n")
    assert load_recipe(tmp_path / "r.yaml").training.learning_rate == 5e-5
    for text in ("nan", "inf", "2e-4x", "1,5"):
        with pytest.raises(FastmathError, match="'training.learning_rate' must be float, got str"):
            load_recipe(None, parse_overrides([f"training.learning_rate={text}"]))
    for text in (".inf", ".nan"):  # YAML's own spellings of the non-finite floats
        with pytest.raises(FastmathError, match="'training.learning_rate' must be a finite number"):
            load_recipe(None, parse_overrides([f"training.learning_rate={text}"]))
    with pytest.raises(FastmathError, match="'training.learning_rate' must be > 0, got -0.0002"):
        load_recipe(None, parse_overrides(["training.learning_rate=-2e-4"]))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"lora.rank": 8}, "did you mean 'lora.r'"),
        ({"trainng.batch_size": 8}, "did you mean 'training'"),
        ({"training.learning_rat": 1e-4}, "did you mean 'training.learning_rate'"),
        ({"training.batch_size": "four"}, "'training.batch_size' must be int, got str 'four'"),
        ({"training.batch_size": True}, "must be int"),
        ({"model.backend": "vllm"}, "takes auto, unsloth, hf; got 'vllm'"),
        ({"lora.r": 0}, "'lora.r' must be >= 1, got 0"),
        ({"lora.alpha": -1}, "'lora.alpha' must be >= 1"),
        ({"lora.dropout": 5}, r"'lora.dropout' must be in \[0, 1\), got 5.0"),
        ({"lora.dropout": 1}, r"'lora.dropout' must be in \[0, 1\)"),
        ({"training.batch_size": 0}, "'training.batch_size' must be >= 1, got 0"),
        ({"dpo.batch_size": 0}, "'dpo.batch_size' must be >= 1"),
        ({"training.learning_rate": -1}, "'training.learning_rate' must be > 0, got -1.0"),
        ({"training.learning_rate": 0}, "'training.learning_rate' must be > 0"),
        ({"dpo.learning_rate": 0}, "'dpo.learning_rate' must be > 0"),
        ({"data.limit": -1}, "'data.limit' must be >= 1, got -1"),
        ({"data.limit": 0}, "'data.limit' must be >= 1"),
        ({"eval.samples": 0}, "'eval.samples' must be >= 1"),
        ({"eval.strategies": "cot,magic"}, "takes zero_shot, .*; got 'magic'"),
        ({"eval.strategies": []}, "needs at least one value"),
    ],
)
def test_bad_keys_and_types_name_the_key_and_the_fix(override, message):
    with pytest.raises(FastmathError, match=message):
        load_recipe(None, override)


def test_zero_epochs_trains_nothing_unless_max_steps_says_so():
    with pytest.raises(FastmathError, match="training.num_epochs=0 trains nothing"):
        validate(load_recipe(None, {"training.num_epochs": 0}), "sft")
    validate(load_recipe(None, {"training.num_epochs": 0, "training.max_steps": 5}), "sft")
    with pytest.raises(FastmathError, match="dpo.num_epochs=0 trains nothing"):
        validate(load_recipe(None, {"dpo.num_epochs": 0}), "dpo")
    validate(load_recipe(None, {"training.num_epochs": 0}), "dpo"), "DPO's schedule is its own"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("model:\n  name: [unclosed\n", "not valid YAML"),
        ("", "is empty; it must set at least model.name"),
        ("# only a comment\n", "is empty"),
        ("- a list\n", "must be a mapping of sections"),
        ("model: 3\n", "section 'model' must be a mapping"),
        (b"model:\n  name: caf\xe9\n", "not UTF-8 text"),
    ],
)
def test_bad_recipe_files_are_short_errors(tmp_path, content, message):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(FastmathError, match=message):
        load_recipe(bad)


def test_missing_recipe_and_a_directory_are_told_apart(tmp_path):
    with pytest.raises(FastmathError, match="not found"):
        load_recipe(tmp_path / "nope.yaml")
    with pytest.raises(FastmathError, match="is a directory; give a .yaml file"):
        load_recipe(tmp_path)


def test_saved_recipe_holds_what_the_stage_read_and_round_trips(tmp_path):
    r = load_recipe(REPO / "recipes" / "tiny-sft.yaml", {"lora.r": 4})
    save_recipe(r, tmp_path / "recipe.yaml", "sft")
    saved = yaml.safe_load((tmp_path / "recipe.yaml").read_text())
    assert list(saved) == ["model", "lora", "data", "training"] and saved["lora"]["r"] == 4
    assert load_recipe(tmp_path / "recipe.yaml").to_dict("sft") == r.to_dict("sft")
    save_recipe(r, tmp_path / "dpo.yaml", "dpo")
    dpo = yaml.safe_load((tmp_path / "dpo.yaml").read_text())
    assert "learning_rate" not in dpo["training"] and "num_epochs" not in dpo["training"], "SFT's schedule did not run"
    assert dpo["dpo"]["learning_rate"] == r.dpo.learning_rate


def test_cli_unknown_key_is_a_short_error_not_a_traceback():
    p = fastmath_cli("sft", "recipes/tiny-sft.yaml", "lora.rank=8", timeout=120)
    assert p.returncode == 2
    assert "unknown recipe key 'lora.rank'; did you mean 'lora.r'?" in p.stderr
    assert "Traceback" not in p.stderr


def test_sft_help_lists_every_key_with_type_default_and_meaning():
    p = fastmath_cli("sft", "--help", timeout=60)
    assert p.returncode == 0, p.stderr
    assert "lora.r  (int = 16)  LoRA rank [>= 1]" in p.stdout
    assert "training.learning_rate  (float = 0.0002)  SFT: peak learning rate [> 0]" in p.stdout
    assert "model.backend  (str = auto)" in p.stdout and "[auto, unsloth, hf]" in p.stdout
    assert "--resume RUN_DIR" in p.stdout
    assert "dpo." not in p.stdout and "eval." not in p.stdout, "only the keys SFT reads"
    dpo = fastmath_cli("dpo", "--help", timeout=60).stdout
    assert "dpo.learning_rate  (float = 5.0e-06)  DPO: peak learning rate" in dpo
    assert "training.learning_rate" not in dpo and "training.logging_steps" in dpo, "DPO's schedule is its own"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["sft", "tiny-sft", "lora.r=0", "training.output_dir={out}"],
            "error: recipe key 'lora.r' must be >= 1, got 0",
        ),
        (
            ["sft", "tiny-sft", "training.batch_size=0", "training.output_dir={out}"],
            "'training.batch_size' must be >= 1",
        ),
        (["sft", "tiny-sft", "training.num_epochs=0", "training.output_dir={out}"], "num_epochs=0 trains nothing"),
        (
            ["sft", "nope", "training.output_dir={out}"],
            "recipe 'nope' not found: give a YAML file, or one of the shipped",
        ),
        (["eval", "--samples", "0", "--model", "m", "--output-dir", "{out}"], "'eval.samples' must be >= 1, got 0"),
        (["eval", "--strategies", "cot,magic", "--model", "m", "--output-dir", "{out}"], "got 'magic'"),
        (["solve", "--strategy", "magic", "--model", "m", "--output-dir", "{out}"], "got 'magic'"),
        (["sft", "tiny-sft", "training.output_dir={out}", "--epochs"], "--epochs needs a value"),
        (["sft", "--resume", "{out}", "lora.r=4"], "--resume continues a run exactly as recorded"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2_before_anything_is_written(tmp_path, args, message):
    p = fastmath_cli(*[a.format(out=tmp_path) for a in args], timeout=120)
    assert p.returncode == 2, p.stderr
    assert message in p.stderr and "Traceback" not in p.stderr
    assert list(tmp_path.iterdir()) == []
