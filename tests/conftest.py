"""Shared fixtures: a tiny model built once per session, real data from ../shared, real runs.

Tests that need the full benchmarks take `shared_data`: missing, it fails under CI ($CI is set
there) and is a skip with its reason elsewhere (`-ra` lists it). Tests that need only a few
problems of each benchmark read the committed fixture `FIXTURE_DATA` instead.

Everything runs offline on CPU: the tiny model is built by `fastmath.tiny` exactly as
`python -m fastmath tiny-model` does, and loaded back through the same code as a hub model.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
GSM8K_TRAIN = SHARED_DATA / "gsm8k" / "train.jsonl"
GSM8K_TEST = SHARED_DATA / "gsm8k" / "test.jsonl"
MGSM_ZH = SHARED_DATA / "mgsm" / "mgsm_zh.tsv"
FIXTURE_DATA = REPO / "tests" / "fixtures" / "data"  # a few problems of each benchmark, same layout


def missing(message: str) -> NoReturn:
    """Something a test needs is absent: a failure under CI (which provides it) and a skip (listed by -ra) elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=True)


def require_shared(path: Path) -> Path:
    """`path` in ../shared/data; missing, a failure under CI and a skip elsewhere."""
    if not path.is_file():
        missing(f"shared data not found at {path} (CI and dev machines have ../shared/data beside the repo)")
    return path


# The overfit recipe: 16 GSM8K training problems, enough epochs to memorise them, at the schedule the
# tests that read it were written for (the tiny recipe's before it moved to batch 4 at 2e-3).
OVERFIT = {
    "data.train": str(GSM8K_TRAIN),
    "data.limit": 16,
    "training.batch_size": 8,
    "training.learning_rate": 5e-3,
    "training.save_steps": 1000,
    "training.logging_steps": 10,
}


# Fixtures that train a model, start a browser or build a virtual environment: every test that uses
# one is `slow` too, so `make test-fast` (`-m "not slow"`) leaves it out; `make test` runs them all.
HEAVY_FIXTURES = frozenset({"overfit_run", "half_right", "pipeline", "browser", "venv"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HEAVY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fastmath_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600, cwd: Path = REPO):
    """Run `python -m fastmath ...` as a real process; returns CompletedProcess with text output."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "fastmath", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session", autouse=True)
def fastmath_logging() -> None:
    """fastmath's messages as the command line prints them (stdout; warnings on stderr), for capsys."""
    from fastmath import log

    log.setup()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    require_shared(GSM8K_TRAIN)
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from fastmath.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2")


@pytest.fixture(scope="session")
def tiny_recipe(tiny_model, tmp_path_factory):
    """A factory: the tiny CPU recipe pointed at the session's tiny model and a fresh output dir."""
    from fastmath.config import load_recipe

    def make(**overrides):
        out = tmp_path_factory.mktemp("outputs")
        base = {"model.name": str(tiny_model), "training.output_dir": str(out)}
        return load_recipe(REPO / "recipes" / "tiny-sft.yaml", {**base, **overrides})

    return make


@pytest.fixture(scope="session")
def overfit_run(tiny_recipe, shared_data) -> Path:
    """One real SFT run, memorising 16 GSM8K problems; several tests read its run directory."""
    from fastmath.train.sft import run_sft

    return run_sft(tiny_recipe(**OVERFIT), "hf")
