"""DPO after SFT on the tiny model: mined pairs, the reference is the SFT policy, a measured effect."""

import json

import pytest
import torch

from fastmath.config import load_recipe
from fastmath.errors import FastmathError
from fastmath.preferences import load_pairs

from .conftest import GSM8K_TRAIN, REPO, fastmath_cli


def completion_logp(model, tokenizer, question: str, completion: str) -> float:
    """Sum of the policy's log-probabilities of `completion` after the chat prompt (the test's own code)."""
    from fastmath.prompts import chat_messages
    from fastmath.templates import prompt_text

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
def dpo_run(mined, overfit_run, tiny_recipe):
    from fastmath.dpo import run_dpo

    pairs_path, _ = mined
    recipe = tiny_recipe(**{"dpo.sft_run": str(overfit_run), "dpo.pairs": str(pairs_path)})
    recipe.dpo = load_recipe(REPO / "recipes" / "tiny-dpo.yaml").dpo  # the tiny DPO schedule
    recipe.dpo.sft_run, recipe.dpo.pairs = str(overfit_run), str(pairs_path)
    recipe.training.logging_steps = 1
    return run_dpo(recipe)


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
    out = capsys.readouterr().out
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
