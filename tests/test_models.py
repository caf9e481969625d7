"""Model directories and adapters that cannot load are short errors before anything is written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from .conftest import fastmath_cli


def broken_copy(model: Path, dest: Path, how: str) -> Path:
    shutil.copytree(model, dest)
    if how == "empty":
        shutil.rmtree(dest)
        dest.mkdir()
    elif how == "config":
        (dest / "config.json").write_text('{"model_type": "qwen2", ')
    elif how == "tokenizer":
        for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
            (dest / name).unlink(missing_ok=True)
    elif how == "weights":
        for weights in dest.glob("*.safetensors"):
            weights.unlink()
    return dest


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("empty", "is empty: download a complete model there"),
        ("config", "model config .*config.json is unreadable or not valid JSON"),
        ("tokenizer", "has no tokenizer files"),
        ("weights", "has no weights"),
    ],
)
def test_broken_model_directories_are_named_with_the_fix(tiny_model, tmp_path, how, message):
    from fastmath.errors import FastmathError
    from fastmath.models import check_model_dir

    model = broken_copy(tiny_model, tmp_path / "model", how)
    with pytest.raises(FastmathError, match=message):
        check_model_dir(str(model))


def test_a_broken_model_directory_stops_the_command_before_its_run_directory(tiny_model, tmp_path):
    """The check above as a user meets it: one line, exit 2, no traceback, nothing written."""
    model = broken_copy(tiny_model, tmp_path / "model", "weights")
    p = fastmath_cli("sft", "tiny-sft", f"model.name={model}", f"training.output_dir={tmp_path / 'out'}", timeout=300)
    assert p.returncode == 2, p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    assert "has no weights" in p.stderr, p.stderr
    assert not (tmp_path / "out").exists(), "checked before a run directory exists"


def test_a_truncated_adapter_and_one_for_another_model_are_refused(overfit_run, tmp_path):
    run = Path(shutil.copytree(overfit_run, tmp_path / "run", ignore=shutil.ignore_patterns("checkpoint-*", "eval")))
    weights = run / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    p = fastmath_cli("solve", "1+1?", "--lora", str(run), timeout=300)
    assert p.returncode == 2 and "is truncated or corrupt" in p.stderr and "Traceback" not in p.stderr, p.stderr

    from fastmath.tiny import build_tiny_model

    other = build_tiny_model(tmp_path / "wider", hidden_size=64)
    p = fastmath_cli("solve", "1+1?", "--lora", str(overfit_run), "--model", str(other), timeout=300)
    assert p.returncode == 2 and "does not fit base model" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert json.loads((overfit_run / "run.json").read_text())["status"] == "finished"


def test_one_model_load_resolves_the_model_name_once(tiny_model, monkeypatch):
    """The tokenizer, the weights and the checks of one load share one `hub.resolve` (it probes the hub)."""
    from fastmath import hub, models
    from fastmath.config import ModelConfig

    asked: list[str] = []
    resolve = hub.resolve
    monkeypatch.setattr(hub, "resolve", lambda name, *a, **k: asked.append(name) or resolve(name, *a, **k))
    cfg = ModelConfig(name=str(tiny_model), backend="hf", load_in_4bit=False)
    model, tokenizer = models.load_for_inference(cfg, None, "hf")
    assert asked == [str(tiny_model)] and model.config.model_type == "qwen2" and tokenizer.padding_side == "left"
