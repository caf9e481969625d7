"""The Unsloth backend, run for real on its CPU backend: every stage, each in its own process.

Unsloth patches trl and transformers for the whole process it is imported in, so every command
here is a fresh `python -m fastmath` process, started through a recorder of the order in which
unsloth, transformers, trl and peft are first imported. The pytest process itself never imports
Unsloth: it is the plain-PEFT side of the comparisons.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .conftest import GSM8K_TRAIN, REPO

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("unsloth") is None, reason="`make install` installs Unsloth"),
]

WATCHED = ("unsloth", "transformers", "trl", "peft")
# Runs a `python -m fastmath` command (argv) or a snippet (-c CODE), recording the order in which the
# watched packages start executing into $IMPORT_ORDER when the process exits.
RECORDER = """
import atexit, json, os, sys
order = []

class Recorder:
    # Records a watched package when its code starts running (not when it is merely looked up).
    def find_spec(self, name, path=None, target=None):
        if name not in WATCHED or name in order:
            return None
        for finder in sys.meta_path:
            spec = finder.find_spec(name, path, target) if finder is not self and hasattr(finder, "find_spec") else None
            if spec is not None and spec.loader is not None:
                run = spec.loader.exec_module
                def exec_module(module, run=run):
                    order.append(name) if name not in order else None
                    run(module)
                spec.loader.exec_module = exec_module
                return spec
        return None

sys.meta_path.insert(0, Recorder())
atexit.register(lambda: open(os.environ["IMPORT_ORDER"], "w").write(json.dumps(order)))
if sys.argv[1] == "-c":
    exec(sys.argv[2])
else:
    from fastmath.cli import main
    sys.exit(main(sys.argv[1:]))
"""


def recorded(tmp: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run `args` under the import recorder; (the process, the import order it saw)."""
    order = tmp / f"order-{len(list(tmp.glob('order-*')))}.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "IMPORT_ORDER": str(order)}
    code = f"WATCHED = {WATCHED!r}\n{RECORDER}"
    p = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=900)  # fmt: skip
    return p, json.loads(order.read_text()) if order.is_file() else []


def assert_unsloth_first(p: subprocess.CompletedProcess, order: list[str]) -> None:
    assert p.returncode == 0, p.stderr[-3000:]
    assert order and order[0] == "unsloth" and {"transformers", "trl"} & set(order), order


@pytest.fixture(scope="module")
def pipeline(tiny_model, shared_data, tmp_path_factory):
    """tiny SFT -> pairs -> DPO, GRPO -> eval -> prompts -> solve, all with model.backend=unsloth."""
    tmp = tmp_path_factory.mktemp("unsloth")
    out = tmp / "outputs"
    backend = "model.backend=unsloth"
    steps = {}
    steps["sft"] = recorded(
        tmp, "sft", "tiny-sft", backend, f"model.name={tiny_model}", f"data.train={GSM8K_TRAIN}", "data.limit=16",
        "training.max_steps=6", "training.logging_steps=1", "training.batching=padded", "model.dtype=float32",
        f"training.output_dir={out}", "training.run_name=sft",
    )  # fmt: skip
    sft = out / "sft"
    common = [backend, f"dpo.sft_run={sft}", f"training.output_dir={out}"]
    steps["pairs"] = recorded(
        tmp, "pairs", "tiny-dpo", *common, f"data.train={GSM8K_TRAIN}", "dpo.problems=2",
        "dpo.samples_per_problem=2", "eval.max_new_tokens=24",
    )  # fmt: skip
    steps["dpo"] = recorded(
        tmp, "dpo", "tiny-dpo", *common, "dpo.pairs=fastmath:samples/preference_data.json", "dpo.max_steps=2",
        "training.logging_steps=1", "training.run_name=dpo",
    )  # fmt: skip
    steps["grpo"] = recorded(
        tmp, "grpo", "tiny-grpo", backend, f"grpo.sft_run={sft}", f"data.train={GSM8K_TRAIN}", "grpo.problems=2",
        "grpo.batch_size=2", "grpo.num_generations=2", "grpo.max_completion_length=24", "grpo.max_steps=2",
        f"training.output_dir={out}", "training.run_name=grpo",
    )  # fmt: skip
    lora = ["--lora", str(sft), "--output-dir", str(out), backend]
    steps["eval"] = recorded(tmp, "eval", *lora, "--dataset", str(GSM8K_TRAIN), "--strategies", "zero_shot",
                             "--samples", "2", "--max-new-tokens", "24")  # fmt: skip
    steps["prompts"] = recorded(tmp, "prompts", *lora, "--dataset", str(GSM8K_TRAIN), "--strategies",
                                "zero_shot,cot", "--samples", "2", "--max-new-tokens", "24")  # fmt: skip
    steps["solve"] = recorded(tmp, "solve", "1 + 1 = ?", *lora, "--max-new-tokens", "16")
    app = (
        "from fastmath.app import ui\n"
        f"model, tokenizer, system = ui.cached_model({str(tiny_model)!r}, {str(sft)!r})\n"
        "print(type(model).__module__, type(model).__name__)"
    )
    steps["app Solve page"] = recorded(tmp, "-c", app)
    return out, steps


@pytest.mark.parametrize("command", ["sft", "pairs", "dpo", "grpo", "eval", "prompts", "solve", "app Solve page"])
def test_every_command_imports_unsloth_before_transformers(pipeline, command):
    _, steps = pipeline
    assert_unsloth_first(*steps[command])


def test_each_stage_ran_on_unsloth_and_recorded_what_ran(pipeline):
    out, steps = pipeline
    sft = json.loads((out / "sft" / "summary.json").read_text())
    assert (sft["backend"], sft["dtype"], sft["batching"], sft["batching_seen"]) == ("unsloth", "float32", "padded",
                                                                                     "padded")  # fmt: skip
    assert sft["steps"] == 6 and sft["trained_tokens"] > 0
    dpo = json.loads((out / "dpo" / "summary.json").read_text())
    assert dpo["backend"] == "unsloth" and dpo["steps"] == 2 and json.loads((out / "dpo" / "run.json").read_text())[
        "parent"] == "sft"  # fmt: skip
    grpo = json.loads((out / "grpo" / "summary.json").read_text())
    assert (grpo["backend"], grpo["steps"], grpo["parent"]) == ("unsloth", 2, "sft") and grpo["trained_tokens"] > 0
    assert "pairs" in steps["pairs"][0].stdout and (out / "sft" / "pairs.jsonl").is_file()
    summary = json.loads((out / "sft" / "eval" / "train" / "summary.json").read_text())
    assert summary["zero_shot"]["backend"] == "unsloth" and summary["zero_shot"]["n"] == 2
    assert set(summary) == {"zero_shot", "cot"}, "prompts added cot beside eval's zero_shot"
    assert steps["solve"][0].stdout.rstrip().splitlines()[-1].startswith("answer: ")


def test_a_padding_free_request_is_recorded_as_what_unsloth_did(tiny_model, tmp_path):
    """Unsloth turns padding-free off: the run warns once and records what the batches really were."""
    p, order = recorded(
        tmp_path, "sft", "tiny-sft", "model.backend=unsloth", f"model.name={tiny_model}", "training.max_steps=2",
        "training.batching=padding_free", f"training.output_dir={tmp_path}", "training.run_name=r",
    )  # fmt: skip
    assert_unsloth_first(p, order)
    assert p.stderr.count("warning: the backend changed what the recipe asked for: padding_free True -> False") == 1
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["batching"] == "padding_free" and summary["batching_seen"] == "padded"
    assert summary["changed_by_backend"]["padding_free"] == [True, False] and summary["pad_fraction"] > 0


def test_the_adapter_unsloth_saved_loads_in_plain_peft_with_the_same_logits(pipeline, tiny_model, tmp_path):
    out, _ = pipeline
    ids = [[1, 20, 30, 40, 50, 60, 70, 80]]
    unsloth_side = (
        "import torch\nfrom pathlib import Path\nfrom fastmath import runs\n"
        "from fastmath.models import activate\nactivate('unsloth')\nfrom fastmath.models import load_for_inference\n"
        f"run = Path({str(out / 'sft')!r})\n"
        "model, _ = load_for_inference(runs.model_settings(run), str(run), 'unsloth')\n"
        f"torch.save(model(input_ids=torch.tensor({ids})).logits.float(), {str(tmp_path / 'logits.pt')!r})\n"
    )
    assert_unsloth_first(*recorded(tmp_path, "-c", unsloth_side))
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), out / "sft").eval()
    with torch.no_grad():
        expected = plain(input_ids=torch.tensor(ids)).logits.float()
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), expected, rtol=1e-5, atol=1e-5)
    lora_b = [p for n, p in plain.named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora_b), "a trained adapter, not the zero init"


def test_first_batch_loss_agrees_between_hf_and_unsloth(pipeline, tiny_model, shared_data, tmp_path):
    """The same padded fp32 batch, LoRA B at zero: the loss is the base model's on both backends."""
    out, _ = pipeline
    p, _ = recorded(
        tmp_path, "sft", "tiny-sft", "model.backend=hf", f"model.name={tiny_model}", f"data.train={GSM8K_TRAIN}",
        "data.limit=16", "training.max_steps=1", "training.logging_steps=1", "training.batching=padded",
        "model.dtype=float32", f"training.output_dir={tmp_path}", "training.run_name=hf",
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]

    def first_loss(run: Path) -> float:
        return json.loads((run / "metrics.jsonl").read_text().splitlines()[0])["loss"]

    hf, unsloth = first_loss(tmp_path / "hf"), first_loss(out / "sft")
    assert abs(unsloth - hf) / hf < 1e-3, (hf, unsloth)


def test_a_process_that_loaded_transformers_first_is_never_patched_late(tmp_path):
    """A long-running process (the app) that already loaded an hf model: `auto` takes hf there, and
    an explicit `unsloth` is refused with the fix, rather than Unsloth patching half-loaded libraries."""
    code = (
        "import transformers\nfrom fastmath.config import ModelConfig\nfrom fastmath.errors import FastmathError\n"
        "from fastmath.models import activate, resolve_backend\n"
        "print(resolve_backend(ModelConfig(backend='auto')))\n"
        "try:\n    activate('unsloth')\nexcept FastmathError as e:\n    print(e)\n"
    )
    p, order = recorded(tmp_path, "-c", code)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.splitlines()[0] == "hf" and "restart the app" in p.stdout and "unsloth" not in order
