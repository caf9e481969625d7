"""DPO after SFT on the tiny model: mined pairs, the reference is the SFT policy, a measured effect."""

import json

import pytest
import torch
import yaml

from fastmath import cli
from fastmath.config import load_recipe
from fastmath.errors import FastmathError
from fastmath.train.preferences import load_pairs

from ..conftest import GSM8K_TRAIN, REPO, fastmath_cli


def completion_logp(model, tokenizer, question: str, completion: str) -> float:
    """Sum of the policy's log-probabilities of `completion` after the chat prompt (the test's own code)."""
    from fastmath.prompts import chat_messages, prompt_text

    prompt = tokenizer(prompt_text(tokenizer, chat_messages(question)), add_special_tokens=False)["input_ids"]
    answer = tokenizer(completion, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt + answer])
    with torch.no_grad():
        logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
    targets = ids[0, len(prompt) :]
    return logps[len(prompt) - 1 :].gather(-1, targets[:, None]).sum().item()


def mean_margin(base_dir, adapter_dir, pairs) -> float:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter_dir).eval()
    margins = [
        completion_logp(model, tokenizer, p.prompt, p.chosen) - completion_logp(model, tokenizer, p.prompt, p.rejected)
        for p in pairs
    ]
    return sum(margins) / len(margins)


@pytest.fixture(scope="module")
def mined(overfit_run, tmp_path_factory):
    """Pairs mined by `python -m fastmath pairs` from the overfit SFT model's own samples."""
    out = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    p = fastmath_cli(
        "pairs", "recipes/tiny-dpo.yaml", f"dpo.sft_run={overfit_run}", f"data.train={GSM8K_TRAIN}",
        "dpo.problems=16", "dpo.samples_per_problem=6", "dpo.temperature=1.3", "eval.max_new_tokens=160",
        "--output", str(out), timeout=600,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    return out, p.stdout


@pytest.fixture(scope="module")
def dpo_run(mined, overfit_run, tmp_path_factory):
    """`python -m fastmath dpo tiny-dpo` on the mined pairs (in this process: it is the same code)."""
    out = tmp_path_factory.mktemp("dpo")
    args = ["dpo", "tiny-dpo", f"dpo.sft_run={overfit_run}", f"dpo.pairs={mined[0]}", "training.logging_steps=1",
            f"training.output_dir={out}", "training.run_name=dpo"]  # fmt: skip
    assert cli.main(args) == 0
    return out / "dpo"


def test_pairs_are_correct_over_wrong_and_counted(mined):
    from fastmath.grading import grade

    pairs_path, stdout = mined
    stats = json.loads(pairs_path.with_name("pairs.summary.json").read_text())
    assert stats["problems"] == 16 and stats["samples"] == 96
    assert stats["pairs"] > 0, "the sampled model must give some right and some wrong solutions"
    assert f"{stats['pairs']} pairs" in stdout
    rows = [json.loads(line) for line in pairs_path.read_text().splitlines()]
    assert len(rows) == stats["pairs"]
    for row in rows:
        assert grade(row["chosen"], row["gold"]).outcome == "correct"
        assert grade(row["rejected"], row["gold"]).outcome != "correct"
    skipped = stats["skipped_all_correct"] + stats["skipped_all_wrong"]
    assert len({row["id"] for row in rows}) == stats["problems"] - skipped


def test_pairs_resume_without_resampling(mined, overfit_run):
    pairs_path, _ = mined
    before = pairs_path.read_text()
    p = fastmath_cli(
        "pairs", "recipes/tiny-dpo.yaml", f"dpo.sft_run={overfit_run}", f"data.train={GSM8K_TRAIN}",
        "dpo.problems=16", "--output", str(pairs_path), timeout=300,
    )  # fmt: skip
    assert p.returncode == 0 and "16 problem(s) already sampled" in p.stdout
    assert pairs_path.read_text() == before


def test_a_resumed_pairs_run_draws_exactly_what_an_uninterrupted_one_draws(mined, overfit_run, tmp_path):
    """Stopped after the first 8 problems, then resumed to 16: the samples are those of one run of 16."""
    out = tmp_path / "pairs.jsonl"
    common = ["pairs", "recipes/tiny-dpo.yaml", f"dpo.sft_run={overfit_run}", f"data.train={GSM8K_TRAIN}",
              "dpo.samples_per_problem=6", "dpo.temperature=1.3", "eval.max_new_tokens=160",
              "--output", str(out)]  # fmt: skip
    for problems in (8, 16):
        p = fastmath_cli(*common, f"dpo.problems={problems}", timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
    assert "8 problem(s) already sampled" in p.stdout
    samples = "pairs.samples.jsonl"
    resumed = {r["id"]: r for r in map(json.loads, out.with_name(samples).read_text().splitlines())}
    whole = {r["id"]: r for r in map(json.loads, mined[0].with_name(samples).read_text().splitlines())}
    assert resumed == whole


def test_reference_is_the_sft_policy_rewards_start_at_zero(dpo_run):
    first = json.loads((dpo_run / "metrics.jsonl").read_text().splitlines()[0])
    assert first["step"] == 1
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins"):
        assert first[key] == 0.0, f"{key} at step 1 is {first[key]}: the reference differs from the policy"


def test_dpo_widens_the_margin_of_chosen_over_rejected(dpo_run, overfit_run, mined, tiny_model):
    pairs = load_pairs(mined[0])
    before = mean_margin(tiny_model, overfit_run, pairs)
    after = mean_margin(tiny_model, dpo_run, pairs)
    assert after > before + 1.0, (before, after)


def test_dpo_recipe_yaml_is_what_ran(dpo_run, overfit_run):
    """DPO's schedule keys are its own: the saved recipe holds them, and not SFT's, and they are what ran."""
    saved = yaml.safe_load((dpo_run / "recipe.yaml").read_text())
    assert "learning_rate" not in saved["training"] and "num_epochs" not in saved["training"]
    assert "batch_size" not in saved["training"]
    tiny = load_recipe(REPO / "recipes" / "tiny-dpo.yaml").dpo
    assert (saved["dpo"]["learning_rate"], saved["dpo"]["num_epochs"], saved["dpo"]["batch_size"]) == (
        tiny.learning_rate, tiny.num_epochs, tiny.batch_size)  # fmt: skip
    rows = [json.loads(line) for line in (dpo_run / "metrics.jsonl").read_text().splitlines()]
    assert {r["learning_rate"] for r in rows if "learning_rate" in r} == {tiny.learning_rate}, "constant schedule"
    summary = json.loads((dpo_run / "summary.json").read_text())
    assert summary["epochs"] == tiny.num_epochs
    assert summary["steps"] == tiny.num_epochs * -(-summary["pairs"] // tiny.batch_size)
    parent = load_recipe(overfit_run / "recipe.yaml")
    assert saved["model"]["name"] == parent.model.name and saved["lora"]["r"] == parent.lora.r
    assert saved["dpo"]["sft_run"] == str(overfit_run.resolve())


def test_dpo_run_directory(dpo_run, overfit_run):
    meta = json.loads((dpo_run / "run.json").read_text())
    assert meta["stage"] == "dpo" and meta["parent"] == overfit_run.name and meta["status"] == "finished"
    summary = json.loads((dpo_run / "summary.json").read_text())
    assert summary["parent"] == overfit_run.name and summary["pairs"] > 0 and summary["trained_tokens"] > 0
    rows = [json.loads(line) for line in (dpo_run / "metrics.jsonl").read_text().splitlines()]
    keys = {"loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"}
    assert all(keys <= row.keys() for row in rows)
    assert not (dpo_run / "ref").exists(), "only the trained adapter is saved"


def test_bad_preference_records_are_reported(tmp_path, capsys):
    path = tmp_path / "prefs.jsonl"
    records = [
        {"prompt": "1+1?", "chosen": "2. The answer is 2.", "rejected": "3. The answer is 3."},
        {"question": "2+2?", "chosen": "The answer is 4.", "rejected": "The answer is 4."},
        {"prompt": "3+3?", "chosen": "The answer is 6."},
        {"prompt": " ", "chosen": "a", "rejected": "b"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n{broken\n")
    pairs = load_pairs(path)
    assert [p.prompt for p in pairs] == ["1+1?"]
    out = capsys.readouterr().err
    for fragment in ("skipped 4 bad record(s)", "line 2: chosen == rejected", "line 3: missing field 'rejected'",
                     "line 4: empty prompt", "line 5: invalid JSON"):  # fmt: skip
        assert fragment in out
    path.write_text(json.dumps(records[1]) + "\n")
    with pytest.raises(FastmathError, match="no usable preference pairs"):
        load_pairs(path)


def test_shipped_sample_pairs_load():
    pairs = load_pairs(REPO / "data" / "preference_data.json")
    assert len(pairs) >= 16 and {p.lang for p in pairs} == {"en", "zh"}


def test_dpo_cli_without_sft_run_says_what_to_do(tmp_path):
    p = fastmath_cli("dpo", "recipes/tiny-dpo.yaml", f"training.output_dir={tmp_path}", timeout=120)
    assert p.returncode == 2 and "no finished sft run" in p.stderr and "make sft" in p.stderr
