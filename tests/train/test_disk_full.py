"""A full disk under a training run: one line naming the folder and the space a checkpoint needs,
a non-zero exit, the run marked failed; `--resume` after freeing space finishes it."""

from __future__ import annotations

import re
import subprocess

import pytest

from fastmath import runs

from ..conftest import fastmath_cli

pytestmark = pytest.mark.slow
SAMPLE = "fastmath:samples/sample_english_math.json"


@pytest.fixture
def small_disk(tmp_path):
    """A 6 MB tmpfs (root only: there is no other way to fill a disk for real), unmounted after."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a 6 MB tmpfs here (needs root): {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_is_one_line_and_a_failed_run(tiny_model, small_disk, tmp_path):
    out = small_disk / "outputs"
    p = fastmath_cli("sft", "tiny-sft", f"model.name={tiny_model}", f"data.train={SAMPLE}", "training.max_steps=40",
                     "training.save_steps=5", "training.save_total_limit=10", f"training.output_dir={out}",
                     "training.run_name=full", "training.report_to=none", timeout=600)  # fmt: skip
    run = out / "full"
    said = re.findall(r"error: .*", p.stderr)  # (it may follow a progress bar's \r on the same line)
    assert p.returncode == 1 and len(said) == 1, p.stderr[-3000:]
    assert re.fullmatch(rf"error: disk full writing into {re.escape(str(run))}: it needs about [\d.]+ MB, "
                        r"[\d.]+ MB free; free some space, or write elsewhere", said[0]), said[0]  # fmt: skip
    assert "Traceback" not in p.stderr
    assert runs.status(run) == "failed" and "disk full" in runs.read(run)["error"]
    assert all((c / runs.CHECKPOINT_DONE).is_file() for c in run.glob("checkpoint-*")), "no torn checkpoint left"
