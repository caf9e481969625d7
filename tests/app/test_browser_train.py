"""The app after training, in a real browser (Playwright, Debian's chromium), offline: the Train
page's defaults on this machine, a start that fails before training, Stop then Resume at the stopped
step, "Evaluate this run" into its relatives' leaderboard rows, and Export as a job.

One app serves the module, over one outputs folder: a short tiny-sft run and its base model
evaluated on a shipped sample through `python -m fastmath eval`, as a student's quickstart leaves
them; the app's working folder has the tiny model where the tiny recipes look.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
from pathlib import Path

import pytest

from fastmath import runs
from fastmath.app import jobs, tables

from ..conftest import fastmath_cli
from . import test_app_browser
from .test_app_browser import COMMAND, _button, _choose, _field, _open, _open_page, _until, serving

browser = test_app_browser.browser  # the same fixture: Debian's chromium, once per module

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
SAMPLE = "fastmath:samples/sample_english_math.json"
MILLION = 1_000_000  # steps: a run the test stops cannot finish first


@pytest.fixture(scope="module")
def app(tiny_model, tmp_path_factory):
    """(the app's URL, its outputs folder, its working folder, a finished run's name)."""
    work = tmp_path_factory.mktemp("train-app")
    outputs, model = work / "outputs", work / "models" / "tiny-qwen2"
    shutil.copytree(tiny_model, model)  # where the tiny recipes look, as after the quickstart
    env = {**OFFLINE, "OMP_NUM_THREADS": "1"}
    done = fastmath_cli("sft", "tiny-sft", "training.max_steps=2", f"training.output_dir={outputs}",
                        "training.run_name=sft-done", env=env, cwd=work)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    base = fastmath_cli("eval", "--model", str(model), "--dataset", SAMPLE, "--strategies", "zero_shot",
                        "--samples", "3", "--max-new-tokens", "24", "--output-dir", str(outputs), env=env)  # fmt: skip
    assert base.returncode == 0, base.stderr[-3000:]
    with pytest.MonkeyPatch.context() as mp:
        for key, value in OFFLINE.items():
            mp.setenv(key, value)
        try:
            with serving(outputs, work) as url:
                yield url, outputs, work, "sft-done"
        finally:  # a test that failed midway leaves no million-step run training behind it
            for job in jobs.load(outputs):
                if job.state in ("running", "stopping"):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(job.pid, signal.SIGKILL)


def _preview(page) -> str:
    return page.locator(COMMAND).inner_text()


def _steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / runs.METRICS).read_text().splitlines()]


def _set(page, key: str, value: str) -> None:
    _field(page, key).fill(value)
    _field(page, key).press("Enter")


def _hover_until_help(page, button, help_text: str) -> None:
    """Hover `button` until its help shows: the page's redraw once a run has stopped can replace the
    button under the pointer, which closes its tooltip for good."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    def shown() -> bool:
        page.mouse.move(0, 0)
        button.hover()
        try:
            page.get_by_text(help_text).wait_for(timeout=5_000)
        except PlaywrightTimeout:
            return False
        return True

    _until(shown, f"the help {help_text!r}", seconds=90)


def _run_page(browser, url: str, name: str, tab: str):
    """A new page on the Run page of run `name`, at its tab `tab`."""
    page = _open_page(browser, url)
    _open(page, "Run")
    _choose(page, "Run", name)
    page.get_by_role("tab", name=tab).click()
    return page


def test_train_defaults_fit_the_machine_and_a_start_that_fails_leaves_no_run(browser, app):
    from playwright.sync_api import expect

    url, outputs, work, _ = app
    page = _open_page(browser, url)
    _open(page, "Train")
    if not jobs.has_gpu():  # a CPU: the tiny recipe and the quickstart's tiny model
        expect(page.get_by_role("combobox", name="Recipe")).to_have_value("tiny-sft")
        expect(_field(page, "model.name")).to_have_value(str(work / "models" / "tiny-qwen2"))
        _choose(page, "Recipe", "qwen2.5-7b-sft")  # a GPU recipe: a warning, and Start still there
        expect(page.get_by_text("in 4-bit for a GPU, and this machine has none")).to_be_visible()
        expect(page.get_by_role("button", name="Start", exact=True)).to_be_enabled()
        _choose(page, "Recipe", "tiny-sft")
        expect(_field(page, "model.name")).to_have_value(str(work / "models" / "tiny-qwen2"))  # the form redrawn
    missing = work / "models" / "not-built"
    _set(page, "model.name", str(missing))
    expect(page.locator(COMMAND)).to_contain_text(f"model.name={missing}")
    name = re.search(r"training\.run_name=(\S+)", _preview(page)).group(1)
    page.get_by_role("button", name="Start", exact=True).click()
    expect(page.get_by_text("The command ended before it began")).to_be_visible(timeout=120_000)
    expect(page.get_by_text(f"{name} · sft · failed").first).to_be_visible()
    expect(page.get_by_test_id("stCode").filter(has_text=str(missing)).first).to_be_visible()  # its log, on the page
    expect(_button(page, "train_resume")).to_have_count(0)
    assert not (outputs / name).exists() and name not in tables.run_names(outputs)
    page.close()


def test_stop_saves_the_step_and_resume_continues_from_it(browser, app):
    from playwright.sync_api import expect

    url, outputs, _, _ = app
    page = _open_page(browser, url)
    _open(page, "Train")
    _choose(page, "Recipe", "tiny-sft")
    page.get_by_role("tab", name="training").click()
    _set(page, "training.max_steps", str(MILLION))
    _set(page, "training.logging_steps", "1")
    expect(page.locator(COMMAND)).to_contain_text("training.logging_steps=1")
    name = re.search(r"training\.run_name=(\S+)", _preview(page)).group(1)
    run = outputs / name
    page.get_by_role("button", name="Start", exact=True).click()
    _until(lambda: (run / runs.METRICS).is_file() and max(_steps(run), default=0) >= 2, "two steps logged")
    _button(page, "train_stop").click()
    expect(page.get_by_text(f"{name} · sft · stopped").first).to_be_visible(timeout=120_000)
    stopped = _steps(run)[-1]
    assert runs.last_checkpoint(run).name == f"checkpoint-{stopped}"  # Stop saved the step it stopped at

    resume = _button(page, "train_resume")
    _hover_until_help(page, resume, f"Continues from checkpoint-{stopped}: its step {stopped} is done.")
    resume.click()
    _until(lambda: max(_steps(run)) > stopped, "a step after the stopped one")
    assert f"from checkpoint-{stopped}" in (run / runs.LOG).read_text()  # trainer: "resuming <run> from ..."
    _button(page, "train_stop").click()
    expect(page.get_by_text(f"{name} · sft · stopped").first).to_be_visible(timeout=120_000)
    steps = _steps(run)
    assert steps == list(range(1, steps[-1] + 1)), "each step once: the resumed run went on from the stopped step"
    page.close()


def test_evaluate_this_run_lands_in_its_relatives_leaderboard_rows(browser, app):
    from playwright.sync_api import expect

    url, outputs, _, name = app
    page = _run_page(browser, url, name, "Evaluation")
    page.get_by_role("button", name="Evaluate this run").click()
    page.get_by_role("heading", name="Train", exact=True, level=1).wait_for()
    preview = page.locator(COMMAND)
    # its own model, and the base model's data, strategy and number of problems, typed as a person would
    for word in (f"--lora {name}", f"eval.datasets={SAMPLE}", "eval.strategies=zero_shot", "eval.samples=3"):
        expect(preview).to_contain_text(word)
    assert "'\"'\"'" not in _preview(page) and "Qwen" not in _preview(page)
    page.get_by_role("button", name="Start", exact=True).click()
    expect(page.get_by_text(f"{name} · eval · finished").first).to_be_visible(timeout=300_000)

    base = runs.base_run_dir(outputs, runs.read(outputs / name)["base_model"])
    assert tables.read_run(outputs, name).evals.keys() == tables.read_run(outputs, base.name).evals.keys()
    _open(page, "Runs")
    board = tables.leaderboard(outputs)
    assert len(board) == 1 and board.iloc[0, 0] == "sample_english_math · zero_shot"  # one row family: comparable
    expect(page.get_by_test_id("stDataFrame").first).to_contain_text("sample_english_math · zero_shot")
    page.close()


def test_export_button_runs_the_export_and_lists_its_files(browser, app):
    from playwright.sync_api import expect

    url, outputs, _, name = app
    page = _run_page(browser, url, name, "Export")
    page.get_by_role("button", name="Export", exact=True).click()
    folder = runs.export_dir(outputs / name, "merged", "bf16")
    _until(lambda: (folder / runs.EXPORT_JSON).is_file(), "the export", seconds=300)
    written = json.loads((folder / runs.EXPORT_JSON).read_text())["files"]
    assert "model.safetensors" in written and all((folder / f).stat().st_size == n for f, n in written.items())
    table = page.get_by_test_id("stDataFrame").filter(has_text="model.safetensors")
    expect(table.first).to_be_visible(timeout=60_000)  # the files it wrote, with their sizes
    expect(table.first).to_contain_text("MB")
    expect(page.get_by_role("button", name="Export again (replaces it)")).to_be_visible()
    assert os.listdir(folder)
    page.close()
