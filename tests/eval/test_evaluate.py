"""`python -m fastmath eval` / `prompts` end to end on the overfit SFT run: files, figures, resume, determinism."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastmath import cli
from fastmath.eval.evaluate import wilson_interval
from fastmath.eval.strategies import STRATEGIES

from ..conftest import GSM8K_TRAIN, REPO, SHARED_DATA, fastmath_cli

pytestmark = pytest.mark.slow

# The tiny model gains nothing from threads, and on a shared machine its threads only contend.
ENV = {"OMP_NUM_THREADS": "1"}
LINE_FIELDS = {"id", "question", "gold", "completion", "pred", "outcome", "tokens", "finish_reason"}
SUMMARY_FIELDS = {
    "n",
    "correct",
    "wrong",
    "none",
    "accuracy",
    "ci95",
    "no_answer_rate",
    "truncation_rate",
    "tokens",
    "wall_time_s",
    "problems_per_s",
    "model",
    "adapter",
    "backend",
    "samples",
    "seed",
    "max_new_tokens",
}
# The 16 memorised training problems, zero-shot, answers long enough to finish.
TRAIN_EVAL = ("--dataset", str(GSM8K_TRAIN), "--strategies", "zero_shot", "--max-new-tokens", "256")


def copy_run(run: Path, dest: Path) -> Path:
    """A private copy of the SFT run (adapter, recipe, run.json): each test's results stay its own."""
    return Path(shutil.copytree(run, dest, ignore=shutil.ignore_patterns("checkpoint-*", "eval")))


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def run_ok(*args: str) -> subprocess.CompletedProcess:
    p = fastmath_cli(*args, env=ENV, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


@pytest.fixture(scope="module")
def compared(overfit_run, shared_data, tmp_path_factory):
    """One `prompts` run: 3 GSM8K test and 3 MGSM-zh problems through every strategy."""
    run = copy_run(overfit_run, tmp_path_factory.mktemp("prompts") / "run")
    p = run_ok(
        "prompts",
        "--lora",
        str(run),
        "--dataset",
        "gsm8k,mgsm_zh",
        "--data-dir",
        str(SHARED_DATA),
        "--samples",
        "3",
        "--max-new-tokens",
        "48",
        "eval.sc_samples=3",
        "eval.tot_depth=2",
    )
    return run, p.stdout


@pytest.mark.parametrize("dataset", ["gsm8k", "mgsm_zh"])
def test_every_strategy_writes_its_results_and_summary(compared, dataset):
    run, stdout = compared
    folder = run / "eval" / dataset
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    assert list(summary) == list(STRATEGIES)
    for strategy, s in summary.items():
        lines = rows(folder / f"{strategy}.jsonl")
        assert len(lines) == 3 and len({r["id"] for r in lines}) == 3
        assert all(r.keys() >= LINE_FIELDS and r["outcome"] in ("correct", "wrong", "none") for r in lines)
        assert all(r["finish_reason"] in ("stop", "length") and r["tokens"] > 0 for r in lines)
        assert s.keys() >= SUMMARY_FIELDS and s["adapter"] == str(run) and s["samples"] == 3 and s["backend"] == "hf"
        assert s["n"] == 3 == s["correct"] + s["wrong"] + s["none"]
        lo, hi = s["ci95"]
        assert 0 <= lo <= s["accuracy"] <= hi <= 1 and hi - lo > 0.4, "3 problems leave a wide interval"
        assert s["no_answer_rate"] == round(s["none"] / 3, 4) and 0 <= s["truncation_rate"] <= 1
        assert s["tokens"] == sum(r["tokens"] for r in lines) and s["problems_per_s"] > 0
    by_id = {strategy: rows(folder / f"{strategy}.jsonl") for strategy in ("self_consistency", "pot", "tot")}
    assert all(len(r["samples"]) == 3 for r in by_id["self_consistency"])
    assert all("program" in r and "sandbox_error" in r for r in by_id["pot"])
    assert all(r["isolation"] in ("bwrap", None) for r in by_id["pot"]), "which isolation ran is recorded"
    assert all(1 <= r["calls"] <= summary["tot"]["call_budget"] == 2 * 2 * 2 * 2 for r in by_id["tot"])
    # few-shot exemplars: fixed, recorded, from a train split (GSM8K's; for Chinese, the project's own)
    lang, source = ("zh", "sample_chinese_math.json:") if dataset == "mgsm_zh" else ("en", "train.jsonl:")
    exemplars = summary["few_shot"]["exemplars"]
    assert list(exemplars) == [lang] and len(exemplars[lang]) == 8
    assert all(i.startswith(source) for i in exemplars[lang])
    table = (folder / "comparison.md").read_text(encoding="utf-8")
    assert all(f"| {name} |" in table for name in STRATEGIES) and table.split("\n\n", 1)[1] in stdout
    assert f"results: {folder}" in stdout


@pytest.fixture(scope="module")
def memorised(overfit_run, shared_data, tmp_path_factory):
    """The 16 memorised training problems evaluated zero-shot: (run directory, results file)."""
    run = copy_run(overfit_run, tmp_path_factory.mktemp("memorised") / "run")
    run_ok("eval", "--lora", str(run), *TRAIN_EVAL, "--samples", "16")
    return run, run / "eval" / "train" / "zero_shot.jsonl"


def test_zero_shot_on_the_memorised_train_problems_scores_what_sft_taught(memorised):
    """The eval path asks exactly as SFT trained (same prompt, template, decoding), so memorised
    answers come back; a second run with the same seed writes the very same file."""
    run, results = memorised
    first = results.read_bytes()
    summary = json.loads((results.parent / "summary.json").read_text())["zero_shot"]
    assert summary["n"] == 16 and summary["accuracy"] >= 0.8, summary

    run_ok("eval", "--lora", str(run), *TRAIN_EVAL, "--samples", "16", "--fresh")
    assert results.read_bytes() == first, "same seed and inputs, same results"

    # `fastmath grade` reads the same answers out of the eval's own file (its `gold` field)
    p = fastmath_cli("grade", str(results), "--output", str(results.with_name("regraded.jsonl")))
    assert p.returncode == 0, p.stderr
    regraded = rows(results.with_name("regraded.jsonl"))
    assert [(r["pred"], r["outcome"]) for r in regraded] == [(r["pred"], r["outcome"]) for r in rows(results)]


def start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false", **ENV}
    return subprocess.Popen(
        [sys.executable, "-m", "fastmath", *args], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True
    )


def wait_for_lines(results: Path, lines: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if results.is_file() and results.read_bytes().count(b"\n") >= lines:
            return
        time.sleep(0.02)


def _kill_after(args: list[str], results: Path, lines: int) -> int:
    """Start the CLI, SIGKILL it once `results` holds `lines` answers; how many it holds then."""
    proc = start(args)
    try:
        wait_for_lines(results, lines, proc)
    finally:
        proc.kill()
        proc.communicate()
    return results.read_bytes().count(b"\n")


def test_an_interrupted_eval_resumes_without_redoing_work(overfit_run, memorised, tmp_path):
    run = copy_run(overfit_run, tmp_path / "run")
    args = ["eval", "--lora", str(run), *TRAIN_EVAL, "--samples", "8", "--batch-size", "1"]
    results = run / "eval" / "train" / "zero_shot.jsonl"
    summary_file = results.parent / "summary.json"

    done = _kill_after(args, results, lines=2)
    assert 2 <= done < 8, "killed half way"
    before = results.read_text(encoding="utf-8").splitlines()
    run_ok(*args)
    after = results.read_text(encoding="utf-8").splitlines()
    assert after[: len(before)] == before and len(after) == 8, "finished answers kept, the rest appended"
    assert len({json.loads(line)["id"] for line in after}) == 8
    assert json.loads(summary_file.read_text())["zero_shot"]["resumed"] == len(before)

    # a kill in the middle of writing a line leaves a torn last line: it is dropped and redone
    results.write_text("\n".join(after[:-1]) + "\n" + after[-1][: len(after[-1]) // 2], encoding="utf-8")
    run_ok(*args)
    redone = results.read_text(encoding="utf-8").splitlines()
    assert sorted(redone) == sorted(after), "the same answer again, each problem once"
    assert json.loads(summary_file.read_text())["zero_shot"]["resumed"] == 7

    # and the pieced-together answers, one prompt at a time, are those of one uninterrupted batched run
    uninterrupted = {r["id"]: r for r in rows(memorised[1])}
    assert all(r == uninterrupted[r["id"]] for r in rows(results))

    # resuming under other settings would mix two evaluations in one number: refused, with the fix
    p = fastmath_cli("eval", "--lora", str(run), "--dataset", str(GSM8K_TRAIN), "--strategies", "zero_shot",
                     "--samples", "8", env=ENV)  # fmt: skip
    assert p.returncode == 2 and "was made with max_new_tokens=256" in p.stderr and "or add --fresh" in p.stderr
    assert rows(results) == [json.loads(line) for line in redone]


def test_two_evals_of_the_same_file_at_once_neither_duplicate_nor_lose_rows(overfit_run, tmp_path):
    """Two real processes on one run, dataset and strategy: the second is refused while the first
    writes; the file then holds each problem once, and the summary counts them once."""
    run = copy_run(overfit_run, tmp_path / "run")
    args = ["eval", "--lora", str(run), *TRAIN_EVAL, "--samples", "6", "--batch-size", "1"]
    results = run / "eval" / "train" / "zero_shot.jsonl"
    first = start(args)
    wait_for_lines(results, 1, first)
    first.send_signal(signal.SIGSTOP)  # frozen mid-eval, holding the file, however fast the machine is
    try:
        second = start(args)
        _, second_err = second.communicate(timeout=300)
    finally:
        first.send_signal(signal.SIGCONT)
    _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err[-2000:]
    assert second.returncode == 2 and "is being written by process" in second_err, second_err[-2000:]
    ids = [r["id"] for r in rows(results)]
    assert len(ids) == len(set(ids)) == 6
    assert json.loads((results.parent / "summary.json").read_text())["zero_shot"]["n"] == 6
    run_ok(*args)  # once the first is done, the file is free again (the lock died with its holder)


def test_errors_name_the_fix(overfit_run, tmp_path, capsys):
    for args, message in (
        (["--lora", str(overfit_run), "--strategies", "cot,magic"], "recipe key 'eval.strategies' takes zero_shot"),
        (["--lora", str(overfit_run), "--dataset", "gsm9k"], "unknown dataset 'gsm9k'"),
        (["--output-dir", str(tmp_path)], "pass --model"),
        (["--lora", str(tmp_path / "nope")], "no run '"),
    ):
        assert cli.main(["eval", *args]) == 2
        assert message in capsys.readouterr().err


def test_wilson_interval_is_sane_at_the_edges():
    assert wilson_interval(0, 10)[0] == 0 and 0.2 < wilson_interval(0, 10)[1] < 0.35
    assert wilson_interval(10, 10)[1] == 1 and 0.65 < wilson_interval(10, 10)[0] < 0.8
    lo, hi = wilson_interval(660, 1319)
    assert lo < 0.5 < hi and hi - lo < 0.06
