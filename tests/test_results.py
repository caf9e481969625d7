"""Where a run's results go: trackers beside metrics.jsonl, and the model card.

One real tiny SFT run logs to MLflow (a local SQLite store) and W&B (offline); then two evaluations,
separate processes started at once, log into the same tracker runs and rewrite the card together.
Everything is read back through the trackers' own clients and huggingface_hub's card parser.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fastmath import runs

from .conftest import REPO, fastmath_cli, free_port

# The defaults are under test: no tracker variable of the caller's may leak in.
TRACKER_VARIABLES = ("MLFLOW_TRACKING_URI", "WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "WANDB_BASE_URL",
                     "TRACKIO_DIR", "TRACKIO_SPACE_ID", "TRACKIO_SERVER_URL")  # fmt: skip
STRATEGIES = ("zero_shot", "cot")


@pytest.fixture(scope="module", autouse=True)
def no_tracker_variables():
    with pytest.MonkeyPatch.context() as mp:
        for name in TRACKER_VARIABLES:
            mp.delenv(name, raising=False)
        yield


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return fastmath_cli(*args, env={"OMP_NUM_THREADS": "1", **(env or {})}, timeout=900)


@pytest.fixture(scope="module")
def tracked(tiny_model, shared_data, tmp_path_factory) -> Path:
    """A 4-step SFT run with report_to [mlflow, wandb], then two concurrent 3-problem evaluations of it."""
    out = tmp_path_factory.mktemp("tracked")
    p = cli("sft", "tiny-sft", f"model.name={tiny_model}", f"data.train={shared_data / 'gsm8k' / 'train.jsonl'}",
            "data.limit=8", "training.max_steps=4", "training.logging_steps=1", "training.report_to=mlflow,wandb",
            f"training.output_dir={out}", "training.run_name=sft")  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    run = out / "sft"
    evals = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fastmath",
                "eval",
                "--lora",
                str(run),
                "--dataset",
                str(shared_data / "gsm8k" / "test.jsonl"),
                "--strategies",
                strategy,
                "--samples",
                "3",
                "--max-new-tokens",
                "16",
                f"training.output_dir={out}",
            ],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for strategy in STRATEGIES
    ]
    for e in evals:
        _, err = e.communicate(timeout=900)
        assert e.returncode == 0, err[-3000:]
    return run


def accuracies(run: Path) -> dict[str, float]:
    summary = json.loads((run / "eval" / "test" / "summary.json").read_text())
    return {strategy: summary[strategy]["accuracy"] for strategy in STRATEGIES}


@pytest.mark.slow
def test_mlflow_holds_each_step_the_recipe_and_the_later_evaluations(tracked):
    from mlflow.tracking import MlflowClient

    ref = runs.read(tracked)["trackers"]["mlflow"]
    assert ref["tracking_uri"] == f"sqlite:///{tracked.parent.resolve() / 'mlflow.db'}", "a local store by default"
    client = MlflowClient(ref["tracking_uri"])
    run = client.get_run(ref["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "sft"
    rows = [json.loads(line) for line in (tracked / "metrics.jsonl").read_text().splitlines()]
    for key in ("loss", "tokens_per_s", "peak_memory_gb", "learning_rate"):  # TRL's and fastmath's own
        history = sorted((m.step, m.value) for m in client.get_metric_history(ref["run_id"], key))
        assert history == [(r["step"], pytest.approx(r[key])) for r in rows if key in r], key
    recipe = yaml.safe_load((tracked / "recipe.yaml").read_text())
    assert run.data.params["training.max_steps"] == "4" and run.data.params["lora.r"] == str(recipe["lora"]["r"])
    assert len(run.data.params) == sum(len(body) for body in recipe.values())
    for strategy, accuracy in accuracies(tracked).items():
        logged = client.get_metric_history(ref["run_id"], f"eval/test/{strategy}/accuracy")
        assert [(m.step, m.value) for m in logged] == [(4, accuracy)], strategy
        assert client.get_metric_history(ref["run_id"], f"eval/test/{strategy}/n")[0].value == 3


@pytest.mark.slow
def test_wandb_offline_writes_the_rows_and_the_evaluations_under_the_run(tracked):
    ref = runs.read(tracked)["trackers"]["wandb"]
    segments = sorted((tracked / "wandb").glob(f"offline-run-*-{ref['id']}"))
    assert len(segments) == 1 + len(STRATEGIES), "the training run, then one reopened segment per evaluation"
    logs = [(s / f"run-{ref['id']}.wandb").read_bytes() for s in segments]
    assert all(key in logs[0] for key in (b"tokens_per_s", b"loss", b"training.learning_rate"))
    for strategy in STRATEGIES:
        assert sum(f"eval/test/{strategy}/accuracy".encode() in log for log in logs[1:]) == 1, strategy


@pytest.mark.slow
def test_the_card_parses_and_its_model_index_holds_the_accuracies(tracked):
    from huggingface_hub import ModelCard

    card = ModelCard.load(tracked / "README.md")  # the parser, offline (validate() would call the hub)
    assert card.data.library_name == "peft" and {"fastmath", "sft", "lora"} <= set(card.data.tags)
    found = {r.metric_config: r.metric_value for r in card.data.eval_results}
    assert found == accuracies(tracked), "both concurrent evaluations are on the card"
    assert all(r.dataset_name == "test" and r.metric_type == "accuracy" for r in card.data.eval_results)
    text = card.text
    assert "[More Information Needed]" not in text and "**Status**: finished" in text
    assert f"python -m fastmath sft {tracked / 'recipe.yaml'} training.run_name=sft-again" in text
    assert f"python -m fastmath eval --lora {tracked} --dataset test --strategies cot --samples 3" in text
    assert "<|im_start|>" in text and "Generation stops at: `<|im_end|>`" in text
    digest = runs.read(tracked)["data"]["sha256"]
    assert f"sha256 `{digest}`" in text and "8 examples used" in text
    assert "AutoPeftModelForCausalLM" in text and "--format gguf" in text


@pytest.mark.slow
def test_concurrent_card_writes_never_leave_a_torn_card(tracked):
    from huggingface_hub import ModelCard

    writer = (
        f"from pathlib import Path\nfrom fastmath import card\nfor _ in range(8): card.write(Path({str(tracked)!r}))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", writer], env=env) for _ in range(3)]
    reads = 0
    while any(p.poll() is None for p in procs):
        card = ModelCard.load(tracked / "README.md")
        assert {r.metric_config for r in card.data.eval_results} == set(STRATEGIES)
        reads += 1
    assert all(p.returncode == 0 for p in procs) and reads > 0
    assert not list(tracked.glob(".README.md.*.tmp")), "no temporary file left behind"


@pytest.mark.parametrize(
    ("report_to", "env", "message"),
    [
        ("none,mlflow", {}, "`none` cannot be combined"),
        ("mlflow", {"MLFLOW_TRACKING_URI": "http://127.0.0.1:{port}"}, "unset MLFLOW_TRACKING_URI"),
        ("wandb", {"WANDB_MODE": "online", "WANDB_BASE_URL": "http://127.0.0.1:{port}"}, "WANDB_MODE=offline"),
        ("bogus", {}, "takes tensorboard, mlflow, wandb, trackio, none"),
    ],
)
def test_a_tracker_that_cannot_log_stops_the_command_before_the_run(tiny_model, tmp_path, report_to, env, message):
    port = str(free_port())  # nothing listens there
    p = cli("sft", "tiny-sft", f"model.name={tiny_model}", f"training.report_to={report_to}",
            f"training.output_dir={tmp_path}", env={k: v.format(port=port) for k, v in env.items()})  # fmt: skip
    assert p.returncode == 2 and message in p.stderr and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert not any(tmp_path.iterdir()), "nothing written"


@pytest.mark.skipif(importlib.util.find_spec("trackio") is not None, reason="trackio is installed here")
def test_a_missing_tracker_package_names_what_to_install(tiny_model, tmp_path):
    p = cli("sft", "tiny-sft", f"model.name={tiny_model}", "training.report_to=tensorboard,trackio",
            f"training.output_dir={tmp_path}")  # fmt: skip
    assert p.returncode == 2 and "pip install trackio" in p.stderr, p.stderr[-2000:]


def test_the_base_models_licence_comes_from_its_own_card_never_the_network(tmp_path):
    from fastmath import card

    (tmp_path / "README.md").write_text("---\nlicense: apache-2.0\n---\n# a base model\n", encoding="utf-8")
    assert card.base_licence(str(tmp_path)) == "apache-2.0"
    assert card.base_licence("fastmath-tests/never-downloaded") is None, "only a cached hub card is read"
