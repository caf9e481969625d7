"""`pip install .` gives a complete package: shipped recipes, sample data and prompt text work from any folder."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from .conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh virtualenv with fastmath installed from the checkout (not editable, no PYTHONPATH).

    Its dependencies come from this interpreter's site-packages, added as a plain path (a .pth line),
    so that no editable install of the checkout there can stand in for the installed copy.
    """
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--target", site, str(REPO)],
        capture_output=True, text=True, cwd=root,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    return python


def run(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FASTMATH_OUTPUTS")}
    env |= {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([python, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=900)


def test_installed_package_runs_tiny_model_and_sft_from_an_empty_folder(venv, tmp_path):
    where = run(venv, "-c", "import fastmath; print(fastmath.__file__)", cwd=tmp_path)
    assert where.returncode == 0 and str(REPO) not in where.stdout, where.stdout + where.stderr
    built = run(venv, "-m", "fastmath", "tiny-model", "m", cwd=tmp_path)
    assert built.returncode == 0, built.stderr[-3000:]
    sft = run(venv, "-m", "fastmath", "sft", "tiny-sft", "model.name=m", "training.max_steps=2",
              "training.output_dir=out", "training.run_name=r", cwd=tmp_path)  # fmt: skip
    assert sft.returncode == 0, sft.stderr[-3000:]
    assert (tmp_path / "out" / "r" / "adapter_model.safetensors").is_file()
    recipe = (tmp_path / "out" / "r" / "recipe.yaml").read_text()
    assert f"name: {tmp_path / 'm'}" in recipe, "local paths are stored absolute: the run resolves from anywhere"
    assert "train: fastmath:samples/sample_english_math.json" in recipe
    prompts = run(venv, "-c", "from fastmath.eval.prompting import COT_EXEMPLARS; print(len(COT_EXEMPLARS['zh']))",
                  cwd=tmp_path)  # fmt: skip
    assert prompts.stdout.strip() == "8", prompts.stderr
