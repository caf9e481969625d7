"""GRPO on the grader's verdicts: rewards on a table, a real run that measurably helps, exact resume.

The starting point is an SFT run that solves only part of a problem set: the tiny model learns 16
sample problems each with two final answers (the gold one, and gold + 1), so greedily it answers
about half of them right and its samples are right about half the time: every group of samples
holds both, which is what GRPO learns from.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from fastmath import cli, resources
from fastmath.config import load_recipe
from fastmath.train.rewards import Overlong, answer_format, completion_text, correctness

from ..conftest import REPO, fastmath_cli
from .interrupt import Interrupt

pytestmark = pytest.mark.slow
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
STEPS = 16  # each a pass over the 16 problems: greedy answers flip within 8, sampled ones take longer


def turn(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


@pytest.mark.parametrize(
    ("completion", "gold", "lang", "right", "formatted"),
    [
        ("16 - 3 - 4 = 9 eggs.\n9 * 2 = 18.\nThe answer is 18.", "18", "en", 1.0, 1.0),
        ("9 * 2 = 18.\nThe answer is 19.", "18", "en", 0.0, 1.0),
        ("The answer is 18 dollars, so she makes 18.", "18", "en", 1.0, 0.0),
        ("$18", "18", "en", 1.0, 0.0),
        ("no idea", "18", "en", 0.0, 0.0),
        ("The answer is 1,000.", "1000", "en", 1.0, 1.0),
        ("The answer is 18.\nQuestion: a new one? The answer is 5.", "18", "en", 1.0, 0.0),
        ("The answer is 1, 2 or 3.", "1", "en", 0.0, 0.0),
        ("一共 18 元。\n答案是 18。", "18", "zh", 1.0, 1.0),
        ("答案是18。", "18", "zh", 1.0, 1.0),
        ("答案是 十八。", "18", "zh", 1.0, 0.0),
        ("The answer is 18.", "18", "zh", 1.0, 0.0),
    ],
)
def test_rewards_on_golden_completions(completion, gold, lang, right, formatted):
    for given in (completion, turn(completion)):  # TRL passes text, or an assistant turn for chat prompts
        assert correctness([given], [gold]) == [right]
        assert answer_format([given], [lang]) == [formatted]
    assert completion_text(turn(completion)) == completion


def test_overlong_penalty_is_soft_near_the_limit():
    penalty = Overlong(max_length=100, buffer=20)
    lengths = [10, 80, 90, 95, 100]
    assert penalty([[0] * n for n in lengths]) == [0.0, 0.0, -0.5, -0.75, -1.0]
    assert penalty.__name__ == "overlong", "names its metric: rewards/overlong/mean"


@pytest.fixture(scope="module")
def half_right(tiny_model, tmp_path_factory) -> tuple[Path, Path]:
    """(an SFT run that answers about half of 16 problems right, the problems file)."""
    tmp = tmp_path_factory.mktemp("grpo-data")
    records = json.loads(resources.sample("sample_english_math.json").read_text(encoding="utf-8"))[:16]
    twice = []
    for r in records:
        steps, gold = r["answer"].rsplit("####", 1)
        twice += [r, {"question": r["question"], "answer": f"{steps}#### {int(gold) + 1}"}]
    (tmp / "two_answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in twice))
    (tmp / "problems.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    p = fastmath_cli("sft", "tiny-sft", f"model.name={tiny_model}", f"data.train={tmp / 'two_answers.jsonl'}",
                     "data.limit=32", "training.num_epochs=60", "training.save_steps=1000",
                     "training.batch_size=8", "training.learning_rate=5e-3",  # the schedule it was written for
                     f"training.output_dir={tmp / 'runs'}", "training.run_name=sft",
                     env=ONE_THREAD, timeout=900)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    return tmp / "runs" / "sft", tmp / "problems.jsonl"


def greedy_accuracy(run: Path, problems: Path) -> float:
    """The evaluator's zero-shot greedy accuracy of a run on the problems."""
    p = fastmath_cli("eval", "--lora", str(run), "--dataset", str(problems), "--strategies", "zero_shot",
                     "--max-new-tokens", "160", env=ONE_THREAD, timeout=600)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads((run / "eval" / "problems" / "summary.json").read_text())["zero_shot"]["accuracy"]


@pytest.fixture(scope="module")
def grpo_run(half_right) -> Path:
    sft, problems = half_right
    p = fastmath_cli("grpo", "tiny-grpo", f"grpo.sft_run={sft}", f"data.train={problems}", "grpo.beta=0.04",
                     f"grpo.max_steps={STEPS}", f"training.output_dir={sft.parent}", "training.run_name=grpo",
                     env=ONE_THREAD, timeout=900)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    return sft.parent / "grpo"


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_grpo_raises_greedy_accuracy_and_the_reward(half_right, grpo_run):
    sft, problems = half_right
    before, after = greedy_accuracy(sft, problems), greedy_accuracy(grpo_run, problems)
    assert 0.2 <= before <= 0.8, f"the SFT run must solve only part of the problems: {before}"
    assert after >= before + 0.25, (before, after)
    curve = [r["rewards/correctness/mean"] for r in rows(grpo_run)]
    assert sum(curve[-4:]) / 4 > sum(curve[:4]) / 4 + 0.05, curve  # the sampled answers are right more often


def test_grpo_logs_each_step_and_saves_a_plain_adapter(grpo_run, tiny_model):
    logged = rows(grpo_run)
    assert [r["step"] for r in logged] == list(range(1, STEPS + 1))
    keys = {"loss", "reward", "reward_std", "rewards/correctness/mean", "rewards/correctness/std",
            "rewards/answer_format/mean", "rewards/answer_format/std", "frac_reward_zero_std",
            "completions/mean_length", "completions/clipped_ratio", "kl", "timing/rollout_s",
            "timing/score_s"}  # fmt: skip
    assert all(keys <= r.keys() for r in logged), keys - logged[0].keys()
    assert logged[0]["kl"] == 0.0, "the reference is the SFT policy: no divergence before the first update"
    assert logged[0]["rewards/correctness/mean"] > 0.2 and logged[0]["frac_reward_zero_std"] < 0.5, (
        "asked with the SFT prompt, the samples are often right and groups are mixed"
    )
    assert not (grpo_run / "ref").exists(), "only the trained adapter is saved"
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), grpo_run)
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)


def test_grpo_run_directory_records_what_ran(grpo_run, half_right):
    sft, _ = half_right
    meta = json.loads((grpo_run / "run.json").read_text())
    assert (meta["stage"], meta["parent"], meta["status"]) == ("grpo", "sft", "finished")
    saved = yaml.safe_load((grpo_run / "recipe.yaml").read_text())
    assert "learning_rate" not in saved["training"] and saved["grpo"]["beta"] == 0.04
    tiny = load_recipe(REPO / "recipes" / "tiny-grpo.yaml").grpo
    assert saved["grpo"]["learning_rate"] == tiny.learning_rate and saved["grpo"]["sft_run"] == str(sft.resolve())
    assert {r["learning_rate"] for r in rows(grpo_run)} == {tiny.learning_rate}
    summary = json.loads((grpo_run / "summary.json").read_text())
    assert summary["stage"] == "grpo" and summary["steps"] == STEPS and summary["trained_tokens"] > 0


def test_a_resumed_run_repeats_the_uninterrupted_one(half_right, tmp_path):
    from safetensors.torch import load_file

    from fastmath.train.grpo import run_grpo

    sft, problems = half_right
    args = ["tiny-grpo", f"grpo.sft_run={sft}", f"data.train={problems}", "grpo.max_steps=3", "grpo.batch_size=8",
            "training.save_steps=1", f"training.output_dir={tmp_path}"]  # fmt: skip
    whole = fastmath_cli("grpo", *args, "training.run_name=whole", env=ONE_THREAD, timeout=900)
    assert whole.returncode == 0, whole.stderr[-3000:]
    torch.set_num_threads(1)
    cut = cli.prepare(cli.COMMANDS["grpo"], [*args, "training.run_name=cut"])
    with pytest.raises(KeyboardInterrupt):
        run_grpo(cut.recipe, cut.parent, "hf", callbacks=(Interrupt(at=2),))
    assert json.loads((tmp_path / "cut" / "run.json").read_text())["status"] == "stopped"
    resumed = fastmath_cli("grpo", "--resume", str(tmp_path / "cut"), env=ONE_THREAD, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    def logged(run: str) -> list[dict]:  # what the run computed, not when or how fast
        clock = ("timing/", "step_time", "tokens_per_s", "peak_", "time")
        return [{k: v for k, v in r.items() if not k.startswith(clock)} for r in rows(tmp_path / run)]

    assert logged("cut") == logged("whole"), "the same rollouts, rewards and losses, step by step"
    a, b = (load_file(tmp_path / run / "adapter_model.safetensors") for run in ("whole", "cut"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
