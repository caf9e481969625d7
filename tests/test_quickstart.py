"""`make quickstart`, the README's first command, run whole: tiny model -> SFT -> pairs -> DPO, GRPO -> eval.

Run from an empty folder with relative paths, exactly as `make quickstart` passes them (about 80 s).
`--backend unsloth` runs the same commands with one more key each; every stage's Unsloth path is
tested in test_unsloth.py, so it is run here only when FASTMATH_QUICKSTART_BACKENDS lists it
(e.g. `hf,unsloth`), to keep the suite within CI's time.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re

import pytest

from fastmath import runs
from fastmath.train.pairs import beside

from .conftest import fastmath_cli

pytestmark = pytest.mark.slow
ROW = re.compile(r"^(base|sft|dpo|grpo)\s+([\d.]+)%\s+\[[\d.]+%, [\d.]+%\]\s+([\d.]+)%\s+(\S+)$", re.M)


BACKENDS = os.environ.get("FASTMATH_QUICKSTART_BACKENDS", "hf").split(",")


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param(
            b,
            marks=pytest.mark.skipif(
                b == "unsloth" and importlib.util.find_spec("unsloth") is None, reason="`make install` installs it"
            ),
        )
        for b in BACKENDS
    ],
)
def test_quickstart_runs_every_stage_and_prints_the_table(backend, tmp_path):
    flags = ["--backend", backend] if backend != "hf" else []  # hf: the command exactly as the README gives it
    p = fastmath_cli("quickstart", "--outputs", "outputs", "--model", "models/tiny-qwen2", *flags,
                     cwd=tmp_path, timeout=900)  # fmt: skip
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    table = {stage: (float(acc), float(none), tmp_path / "outputs" / run) for stage, acc, none, run in
             ((m[0], m[1], m[2], m[3].rsplit("/", 1)[-1]) for m in ROW.findall(p.stdout))}  # fmt: skip
    assert list(table) == ["base", "sft", "dpo", "grpo"], p.stdout[-2000:]
    assert table["sft"][0] >= table["base"][0] + 25, "SFT learned the problems it trained on"
    assert table["sft"][1] == 0.0, "every SFT answer ends with the line the grader reads"

    base, sft, dpo, grpo = (table[stage][2] for stage in ("base", "sft", "dpo", "grpo"))
    for run, stage in ((sft, "sft"), (dpo, "dpo"), (grpo, "grpo")):
        meta, summary = runs.read(run), json.loads((run / runs.SUMMARY).read_text())
        assert (meta["stage"], meta["status"], summary["backend"]) == (stage, "finished", backend), run
        assert meta["parent"] == (sft.name if stage != "sft" else None)
    for run in (base, sft, dpo, grpo):
        evaluated = json.loads((runs.eval_dir(run, "sample_english_math") / runs.SUMMARY).read_text())
        assert evaluated["zero_shot"]["n"] == 16 and evaluated["zero_shot"]["backend"] == backend, run
    assert json.loads(beside(sft / runs.PAIRS, "summary").read_text())["pairs"] > 0
    assert runs.read(base)["stage"] == "base"
