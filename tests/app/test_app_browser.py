"""End to end in a real browser: `streamlit run app.py` driven by Playwright in Debian's chromium.

Never `playwright install` (it downloads a browser): the project's install step puts Debian's
chromium at /usr/bin/chromium. Screenshots go to the test's tmp dir, and the page tour saves one of
each page to $FASTMATH_SCREENSHOTS when it is set (README's: see `test_screenshots_of_every_page`).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from fastmath import cli, runs
from fastmath.grading import gold_from_answer

from ..conftest import GSM8K_TRAIN, REPO, free_port
from .test_app import _gsm8k, build_app_outputs

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1400, "height": 1000}
POINTS = '[data-testid="stVegaLiteChart"] [aria-roledescription="point"]'  # a chart's logged points
COMMAND = '.st-key-train_preview [data-testid="stCode"]'  # the command the Train page will start


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"no {CHROMIUM}: `make install` installs Debian's chromium (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in requirements.txt: `make install`")
    sync_api.expect.set_options(timeout=60_000)  # a loaded 2-core machine loads a model in seconds, not at once
    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@contextmanager
def serving(outputs: Path, cwd: Path) -> Iterator[str]:
    """`streamlit run app.py -- --outputs OUTPUTS` started in `cwd`, as a user starts it; its URL."""
    port = free_port()
    log = cwd / "streamlit.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.port", str(port),
             "--server.address", "127.0.0.1", "--", "--outputs", str(outputs)],
            cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"},
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read() == b"ok":
                        break
            except OSError:
                pass
            assert server.poll() is None, f"streamlit exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"streamlit not healthy after 90 s:\n{log.read_text()}"
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert "Traceback" not in log.read_text(), log.read_text()[-5000:]  # no tracebacks in the terminal either


@pytest.fixture(scope="module")
def app_url(overfit_run, tmp_path_factory):
    outputs = build_app_outputs(overfit_run, tmp_path_factory.getbasetemp())
    with serving(outputs, tmp_path_factory.mktemp("streamlit")) as url:
        yield url


def _open_page(browser, url: str):
    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(60_000)
    page.goto(url)
    page.get_by_role("heading", name="Runs", exact=True, level=1).wait_for()
    return page


def _screenshot(page, name: str, folder: Path, whole: bool = False) -> None:
    """The page from its top once the script run is over (Streamlit's running indicator gone);
    `whole`: all of it, which scrolls inside its main pane, so the window is made as tall for the picture."""
    from playwright.sync_api import expect

    expect(page.get_by_test_id("stStatusWidget")).to_be_hidden()
    folder.mkdir(parents=True, exist_ok=True)
    main = page.get_by_test_id("stMain")
    main.evaluate("el => el.scrollTo(0, 0)")
    page.wait_for_timeout(1500)  # charts and tables draw after the script has run
    if whole:
        page.set_viewport_size({**VIEWPORT, "height": max(VIEWPORT["height"], main.evaluate("el => el.scrollHeight"))})
        page.wait_for_timeout(1500)  # and again at the new size
    page.screenshot(path=str(folder / f"{name}.png"))
    page.set_viewport_size(VIEWPORT)


def _choose(page, label: str, option: str) -> None:
    """Pick an option; tried again if the page redrew and closed the list meanwhile (a run that ends
    redraws the whole page)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(3):
        page.get_by_role("combobox", name=label).click()
        try:
            page.get_by_role("option", name=option, exact=True).click(timeout=10_000)
            return
        except PlaywrightTimeout:
            if attempt == 2:
                raise
            page.keyboard.press("Escape")


def _open(page, title: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title, exact=True).click()
    page.get_by_role("heading", name=title, exact=True, level=1).wait_for()


def _field(page, label: str):
    """The text or number box labelled `label`: not its help button, which names it too, nor the
    box the page drew before its latest redraw (Streamlit keeps it, marked stale, until the run ends)."""
    fresh = ':not([data-stale="true"] *)'
    return page.locator(f'input[aria-label="{label}"]{fresh}, textarea[aria-label="{label}"]{fresh}')


def _cells(page, table: int = 0) -> list[str]:
    """The visible cells of a table (st.dataframe draws on a canvas; its accessible copy holds the text)."""
    cells = page.get_by_test_id("stDataFrame").nth(table).locator("[role=gridcell]")
    cells.first.wait_for(state="attached")
    return [c.inner_text() for c in cells.all()]


def _click_row(page, table: int, row: int) -> None:
    """Click a table's row by its selection box (the canvas has no element per row)."""
    box = page.get_by_test_id("stDataFrame").nth(table).bounding_box()
    page.mouse.click(box["x"] + 15, box["y"] + 35 * (row + 1) + 17)


def _until(condition, what: str, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_browser_runs_run_problems_and_an_answer_written_as_it_comes(browser, app_url, overfit_run, tmp_path):
    from playwright.sync_api import expect

    problem = _gsm8k(GSM8K_TRAIN, 1)[0]
    gold = gold_from_answer(problem["answer"])
    page = _open_page(browser, app_url)
    assert _cells(page)[1] == overfit_run.name  # the leaderboard's best run
    scroller = page.get_by_test_id("stDataFrame").first.locator(".dvn-scroller")
    assert scroller.evaluate("el => el.scrollWidth <= el.clientWidth")  # all of it in view at 1400 px
    expect(page.get_by_role("button", name="Deploy")).to_have_count(0)  # no developer toolbar
    _screenshot(page, "runs", tmp_path)

    _click_row(page, 0, 0)  # the leaderboard's best run opens on the Run page
    page.get_by_role("heading", name="Run", exact=True, level=1).wait_for()
    expect(page.get_by_role("combobox", name="Run")).to_have_value(overfit_run.name)
    page.get_by_role("tab", name="Evaluation").click()
    expect(page.get_by_text("Accuracy with its 95% confidence interval")).to_be_visible()
    _screenshot(page, "run", tmp_path)

    _open(page, "Problems")
    _choose(page, "Run", overfit_run.name)
    expect(page.get_by_test_id("stMetric").first).to_be_visible()
    _choose(page, "Side by side with", f"{overfit_run.name} · cot")
    expect(page.locator(".fastmath-completion")).to_have_count(2)
    _screenshot(page, "problems", tmp_path)

    _open(page, "Solve")
    expect(page.get_by_role("combobox", name="Adapter")).to_have_value(overfit_run.name)  # the best run
    _field(page, "Problem (English or Chinese)").fill(problem["question"])
    _field(page, "Expected answer (optional)").fill(gold)
    page.get_by_role("button", name="Solve").click()
    expect(page.get_by_text(f"Right: {gold}")).to_be_visible(timeout=120_000)  # the first load imports torch
    expect(page.locator("mark", has_text=gold)).to_be_visible()
    _screenshot(page, "solve", tmp_path)

    # The untrained base model writes hundreds of tokens: the answer grows on the page as it is
    # written, in a box of bounded height, with one Stop button, which stops it
    _choose(page, "Adapter", "(none: the base model alone)")
    _field(page, "Problem (English or Chinese)").fill("小明有 5 个苹果，又买了 7 个。他一共有多少个苹果？")
    _field(page, "Expected answer (optional)").fill("")
    page.get_by_text("Generation settings").click()
    page.get_by_role("slider", name="Max new tokens").press("End")  # 2048: long enough to stop it midway
    page.get_by_role("button", name="Solve").click()
    answer = page.locator(".fastmath-completion", has_text="▌")
    answer.wait_for()
    expect(page.get_by_role("button", name="Stop")).to_have_count(1)
    assert answer.evaluate("el => getComputedStyle(el).overflowY") == "auto"
    so_far = answer.inner_text()
    _until(lambda: len(answer.inner_text()) > len(so_far), "the answer to grow", seconds=60)
    page.get_by_role("button", name="Stop").click()
    expect(page.get_by_text("Stopped before the model finished.")).to_be_visible()
    page.close()


def test_browser_train_watch_stop_resume_then_the_leaderboard(browser, tiny_model, tmp_path):
    """A tiny SFT started from the Train page: its loss chart gains points while it trains, Stop
    stops it (Ctrl-C), Resume finishes it from its checkpoint; an eval started the same way puts it
    on the leaderboard."""
    from playwright.sync_api import expect

    work, outputs = tmp_path / "work", tmp_path / "work" / "outputs"
    outputs.mkdir(parents=True)
    recipe = {
        "model": {"name": str(tiny_model), "backend": "hf", "load_in_4bit": False, "max_seq_length": 512},
        "lora": {"r": 8, "alpha": 16},
        "data": {"train": "fastmath:samples/sample_english_math.json", "limit": 16},
        "training": {"batch_size": 4, "gradient_accumulation_steps": 8, "learning_rate": 5e-3, "warmup_ratio": 0.0,
                     "gradient_checkpointing": False, "logging_steps": 1, "save_steps": 5, "report_to": "none"},
        "eval": {"datasets": ["fastmath:samples/sample_english_math.json"], "strategies": ["zero_shot"],
                 "samples": 2, "max_new_tokens": 16},
    }  # fmt: skip
    (work / "recipes").mkdir()
    (work / "recipes" / "browser-sft.yaml").write_text(yaml.safe_dump(recipe))
    with serving(outputs, work) as url:
        page = _open_page(browser, url)
        _open(page, "Train")
        _choose(page, "Recipe", "recipes/browser-sft.yaml")  # the working folder's recipes/ are offered
        expect(_field(page, "model.name")).to_have_value(str(tiny_model))  # the form holds the recipe's values
        page.get_by_role("tab", name="training").click()
        _field(page, "training.max_steps").fill("30")
        _field(page, "training.max_steps").press("Enter")
        preview = page.locator(COMMAND)
        expect(preview).to_contain_text("training.max_steps=30")
        name = re.search(r"training\.run_name=(\S+)", preview.inner_text()).group(1)
        run = outputs / name
        page.get_by_role("button", name="Start", exact=True).click()

        # the loss chart gains points while the run trains, without a reload
        points = page.locator(POINTS)
        _until(lambda: points.count() >= 1, "the first logged loss")
        first = points.count()
        _until(lambda: points.count() > first, "more logged losses")
        expect(page.get_by_test_id("stMetric").filter(has_text="Step")).to_contain_text("/ 30")
        _until(lambda: runs.last_checkpoint(run) is not None, "a checkpoint")
        page.get_by_role("button", name="Stop", exact=True).click()
        expect(page.get_by_text(f"{name} · sft · stopped").first).to_be_visible(timeout=120_000)
        assert runs.read(run)["status"] == "stopped" and points.count() < 30
        _screenshot(page, "train-stopped", tmp_path)

        page.get_by_role("button", name="Resume", exact=True).click()
        expect(page.get_by_text(f"{name} · sft · finished").first).to_be_visible(timeout=180_000)
        expect(points).to_have_count(30)  # every step once: the resumed run's metrics continue its own
        assert runs.read(run)["status"] == "finished" and "resuming" in (run / runs.LOG).read_text()

        _choose(page, "Command", f"eval: {cli.COMMANDS['eval'].help}")
        _choose(page, "Recipe", "recipes/browser-sft.yaml")  # its eval: section: 2 sample problems, zero_shot
        _choose(page, "Model to evaluate", name)
        expect(preview).to_contain_text(f"--lora {name}")
        page.get_by_role("button", name="Start", exact=True).click()
        expect(page.get_by_text(f"{name} · eval · finished").first).to_be_visible(timeout=180_000)

        _open(page, "Runs")
        assert _cells(page)[:3] == ["sample_english_math · zero_shot", name, "sft"]  # on the leaderboard
        page.close()


@pytest.mark.skipif(not os.environ.get("FASTMATH_SCREENSHOTS"), reason="set FASTMATH_SCREENSHOTS=DIR to save them")
def test_screenshots_of_every_page(browser, request, tmp_path_factory):
    """Each page as a student sees it, into $FASTMATH_SCREENSHOTS, over $FASTMATH_APP_OUTPUTS (the
    README's are the quickstart's) else the tests' runs. Last, a short SFT of the best run's base
    model is started from the Train page, shown while it trains, and stopped (it stays in OUTPUTS)."""
    from playwright.sync_api import expect

    from fastmath.app import tables

    folder = Path(os.environ["FASTMATH_SCREENSHOTS"]).resolve()
    if os.environ.get("FASTMATH_APP_OUTPUTS"):
        outputs = Path(os.environ["FASTMATH_APP_OUTPUTS"]).resolve()
    else:
        outputs = build_app_outputs(request.getfixturevalue("overfit_run"), tmp_path_factory.getbasetemp())
    best = outputs / tables.best_run(outputs)
    dataset = tables.datasets(best)[0]
    problem = tables.problems(best, dataset, tables.strategies(best, dataset)[0])[0]
    with serving(outputs, outputs.parent) as url:
        page = _open_page(browser, url)
        _screenshot(page, "runs", folder, whole=True)
        for title in ("Run", "Compare", "Problems"):
            _open(page, title)
            _screenshot(page, title.lower(), folder, whole=True)
        _open(page, "Solve")
        _field(page, "Problem (English or Chinese)").fill(problem["question"])
        _field(page, "Expected answer (optional)").fill(gold_from_answer(str(problem["gold"])))
        page.get_by_role("button", name="Solve").click()
        expect(page.get_by_test_id("stAlert")).to_be_visible(timeout=120_000)  # the first load imports torch
        _screenshot(page, "solve", folder, whole=True)

        _open(page, "Train")
        _choose(page, "Recipe", "tiny-sft")
        # the form holds the recipe's values (a local path made absolute where the app's folder has it)
        expect(_field(page, "model.name")).to_have_value(re.compile(r"(^|/)models/tiny-qwen2$"))
        _field(page, "model.name").fill(runs.read(best)["base_model"])
        _field(page, "model.name").press("Enter")
        page.get_by_role("tab", name="training").click()
        for key, value in (("training.max_steps", "60"), ("training.logging_steps", "1")):
            _field(page, key).fill(value)
            _field(page, key).press("Enter")
        expect(page.locator(COMMAND)).to_contain_text("training.logging_steps=1")
        page.get_by_role("button", name="Start", exact=True).click()
        _until(lambda: page.locator(POINTS).count() >= 12, "a dozen logged losses")
        _screenshot(page, "train", folder)
        page.get_by_role("button", name="Stop", exact=True).click()
        expect(page.get_by_text("· sft · stopped").first).to_be_visible(timeout=120_000)

        page.get_by_text("中文").click()
        _open(page, "运行列表")
        _screenshot(page, "runs-zh", folder)
        page.close()
