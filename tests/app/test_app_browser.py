"""End to end in a real browser: `streamlit run app.py` driven by Playwright in Debian's chromium.

Never `playwright install` (it downloads a browser): the project's install step puts Debian's
chromium at /usr/bin/chromium. Screenshots go to the test's tmp dir, and the page tour saves one of
each page to $FASTMATH_SCREENSHOTS when it is set (README's: see `test_screenshots_of_every_page`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


def _screenshot(page, name: str, folder: Path, whole: bool = False, width: int = VIEWPORT["width"]) -> None:
    """The page from its top once the script run is over (Streamlit's running indicator gone), `width`
    px wide; `whole`: all of it, which scrolls inside its main pane, so the window is made as tall."""
    from playwright.sync_api import expect

    page.set_viewport_size({**VIEWPORT, "width": width})
    expect(page.get_by_test_id("stStatusWidget")).to_be_hidden()
    folder.mkdir(parents=True, exist_ok=True)
    main = page.get_by_test_id("stMain")
    main.evaluate("el => el.scrollTo(0, 0)")
    page.wait_for_timeout(1500)  # charts and tables draw after the script has run
    if whole:
        tall = max(VIEWPORT["height"], main.evaluate("el => el.scrollHeight"))
        page.set_viewport_size({"width": width, "height": tall})
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


def _button(page, key: str):
    """The app's button of widget key `key`. Not by its label: while the page's script runs,
    Streamlit's header shows its own "Stop" (of that script), which a click must never hit."""
    return page.locator(f".st-key-{key}").get_by_role("button")


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
    expect(_button(page, "solve_stop")).to_have_count(1)
    assert answer.evaluate("el => getComputedStyle(el).overflowY") == "auto"
    so_far = answer.inner_text()
    _until(lambda: len(answer.inner_text()) > len(so_far), "the answer to grow", seconds=60)
    _button(page, "solve_stop").click()
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
        _button(page, "train_stop").click()
        expect(page.get_by_text(f"{name} · sft · stopped").first).to_be_visible(timeout=120_000)
        assert runs.read(run)["status"] == "stopped" and points.count() < 30
        _screenshot(page, "train-stopped", tmp_path)

        _button(page, "train_resume").click()
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
    README's are the quickstart's) else the tests' runs. Then a short SFT of the best run's base
    model is started from the Train page, shown while it trains, and stopped (it stays in OUTPUTS);
    last, Problems 800 px wide, and Runs and Run (800 px) in 中文."""
    from playwright.sync_api import expect

    from fastmath.app import tables

    folder = Path(os.environ["FASTMATH_SCREENSHOTS"]).resolve()
    if os.environ.get("FASTMATH_APP_OUTPUTS"):
        outputs = Path(os.environ["FASTMATH_APP_OUTPUTS"]).resolve()
    else:
        outputs = build_app_outputs(request.getfixturevalue("overfit_run"), tmp_path_factory.getbasetemp())
    best = outputs / tables.best_run(outputs)
    dataset = tables.datasets(best)[0]
    problem = tables.problems(best, dataset, tables.strategies(best, dataset)[0])[0][0]  # (rows, damage)
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
        _button(page, "train_stop").click()
        expect(page.get_by_text("· sft · stopped").first).to_be_visible(timeout=120_000)

        _open(page, "Problems")
        _screenshot(page, "problems-800", folder, width=800)  # a narrow window: figures wrap, none is cut

        page.get_by_text("中文").click()
        _open(page, "运行列表")
        _screenshot(page, "runs-zh", folder)
        _open(page, "运行")
        _screenshot(page, "run-zh-800", folder, whole=True, width=800)
        page.close()


# --- One app over runs with a damaged one: pages whole, 中文 throughout, nothing fetched, nothing cut ---

DAMAGED = "sft-damaged"  # a copy of the SFT run whose files were cut off as a killed writer leaves them
# What the 中文 pass does not read: code (commands, the recipe, the log), what models wrote, summary.json as
# data; Streamlit's own: its icon ligatures (`keyboard_arrow_down` is drawn as an icon), its skip link, and
# its select boxes' announcements to screen readers (`2 options available.`).
NOT_INTERFACE = (
    '[data-testid="stCode"], .fastmath-completion, [data-testid="stJson"], [data-testid="stIconMaterial"], '
    '[data-testid="stSkipToContent"], [role="log"][aria-live]'
)
SHOWN_TEXT = """(skip) => {
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    if (!node.textContent.trim() || !el || el.closest(skip) || el.closest('style, script, noscript')) continue;
    if (!el.getClientRects().length || getComputedStyle(el).visibility === 'hidden') continue;
    out.push(node.textContent.trim());
  }
  return out;
}"""
# A figure is cut when its box is narrower than its text (an ellipsis, or text hidden past its edge);
# so is a filter's row of chips that must be scrolled sideways to be read.
CUT_FIGURES = """() => [...document.querySelectorAll(
    '[data-testid="stMetricValue"], [data-testid="stMetricValue"] *, [data-testid="stMetricLabel"] *,'
    + '[data-testid="stMultiSelectTagsContainer"], [data-tag] *')]
  .filter(el => el.scrollWidth > el.clientWidth + 1 || getComputedStyle(el).textOverflow === 'ellipsis'
                && el.scrollWidth > el.clientWidth)
  .map(el => el.innerText)"""
LOCAL = re.compile(r"^(https?|wss?)://(127\.0\.0\.1|localhost)(:\d+)?/")


def _cut_off(path: Path) -> None:
    """The file as a writer killed mid-row leaves it: its last line half written, no newline after it."""
    data = path.read_bytes().rstrip(b"\n")
    start = data.rfind(b"\n") + 1
    path.write_bytes(data[: start + (len(data) - start) // 2])


@pytest.fixture(scope="module")
def damaged_app(overfit_run, tmp_path_factory):
    """The app over the session's runs and a copy of the SFT run with its summary, its metrics, its
    eval summary and one eval's per-problem file cut off; every request the browser makes is kept."""
    outputs = tmp_path_factory.mktemp("damaged") / "outputs"
    shutil.copytree(build_app_outputs(overfit_run, tmp_path_factory.getbasetemp()), outputs)
    damaged = outputs / DAMAGED
    shutil.copytree(outputs / overfit_run.name, damaged)
    for file in ("summary.json", "metrics.jsonl", "eval/mix/summary.json", "eval/mix/zero_shot.jsonl"):
        _cut_off(damaged / file)
    requests: list[str] = []
    with serving(outputs, outputs.parent) as url:
        yield url, outputs, requests
    outside = sorted({r for r in requests if not LOCAL.match(r) and not r.startswith(("data:", "blob:"))})
    assert outside == []  # nothing fetched from any host but the app's own, on any page the tests opened


def _watched(browser, app) -> Any:
    url, _, requests = app
    page = _open_page(browser, url)
    page.on("request", lambda r: requests.append(r.url))
    page.reload()  # every request from the first one
    page.get_by_role("heading", name="Runs", exact=True, level=1).wait_for()
    return page


def _tab(page, name: str):
    """Open a tab of the page and return its panel: the ones drawn last, not those Streamlit keeps,
    marked stale, from before the page's latest redraw (until that run ends)."""
    from playwright.sync_api import expect

    expect(page.get_by_test_id("stStatusWidget")).to_be_hidden()
    fresh = ':not([data-stale="true"] *)'
    tab = page.locator(f'[role="tab"]{fresh}').filter(has_text=name)
    # Until the redraw that a choice started has ended, the former tabs are still there, not yet
    # marked stale, beside the new ones (the status widget shows only after a moment): wait for one.
    expect(tab).to_have_count(1)
    tab.click()
    return page.locator(f'[role="tabpanel"]{fresh}').and_(page.get_by_role("tabpanel", name=name))


def test_a_damaged_run_marks_only_itself_and_the_views_that_read_its_files(browser, damaged_app, overfit_run):
    from playwright.sync_api import expect

    sft, metrics_lines = overfit_run.name, len((overfit_run / runs.METRICS).read_text().splitlines())
    page = _watched(browser, damaged_app)
    assert _cells(page)[1] == sft  # the leaderboard as before
    statuses = [c for c in _cells(page, 1) if c.startswith(("broken", "finished"))]
    assert statuses.count("finished") == 2 and any("broken: summary.json" in c for c in statuses)

    # its own page: each tab shows what it can, the damaged files named where they are read, with their line
    _open(page, "Run")
    _choose(page, "Run", DAMAGED)
    warning = page.get_by_test_id("stAlert").first
    expect(warning).to_contain_text(f"metrics.jsonl ends cut off at line {metrics_lines}")
    expect(warning).to_contain_text("eval/mix/zero_shot.jsonl ends cut off at line")
    expect(page.get_by_test_id("stMetric").first).to_contain_text("broken")  # not "finished"
    expect(_tab(page, "Evaluation")).to_contain_text("eval/mix/summary.json cannot be read (not valid JSON)")
    expect(_tab(page, "Recipe").get_by_test_id("stCode")).to_contain_text("run_name:")
    expect(_tab(page, "Summary")).to_contain_text("summary.json cannot be read")
    expect(_tab(page, "Export").get_by_test_id("stCode")).to_contain_text("fastmath export")
    # another run's page is whole
    _choose(page, "Run", sft)
    expect(page.get_by_test_id("stMetric").first).to_contain_text("finished")
    expect(_tab(page, "Summary").get_by_test_id("stJson")).to_be_visible()

    # Problems: the answer view and side by side stay for every run; a damaged file marks its column
    _open(page, "Problems")
    expect(page.locator(".fastmath-completion")).to_have_count(1)
    _choose(page, "Side by side with", f"{DAMAGED} · zero_shot")
    expect(page.locator(".fastmath-completion")).to_have_count(2)
    expect(page.get_by_test_id("stAlert")).to_contain_text("eval/mix/zero_shot.jsonl ends cut off at line")
    _choose(page, "Run", DAMAGED)  # its intact results still open, in name order without their summary
    expect(page.get_by_test_id("stMetric").first).to_be_visible()

    _open(page, "Compare")
    _choose(page, "Runs", DAMAGED)
    page.keyboard.press("Escape")  # a multiselect's list stays open for more
    expect(page.get_by_test_id("stAlert").filter(has_text="went wrong")).to_have_count(0)
    expect(page.get_by_test_id("stDataFrame").last).to_be_visible()  # the recipe differences
    expect(page.get_by_test_id("stVegaLiteChart")).to_be_visible()  # the loss curves of all three
    page.close()


def _text_words(page) -> set[str]:
    from playwright.sync_api import expect

    expect(page.get_by_test_id("stStatusWidget")).to_be_hidden()
    page.wait_for_timeout(1000)
    return {w for text in page.evaluate(SHOWN_TEXT, NOT_INTERFACE) for w in re.findall(r"[A-Za-z][A-Za-z']+", text)}


def _allowed_words(outputs: Path) -> set[str]:
    """ASCII words the app shows as they are: names of runs, models, files, recipe keys and their values,
    commands, strategies, datasets, problem text; and the technical terms its 中文 keeps."""
    from fastmath import config
    from fastmath.app import i18n

    texts = [p.name for p in outputs.rglob("*")]
    texts += [(p / runs.RECIPE).read_text() for p in outputs.iterdir() if (p / runs.RECIPE).is_file()]
    texts += [str(runs.read(p).get("base_model")) for p in outputs.iterdir()]
    shown = ("id", "question", "gold", "pred")
    texts += [json.dumps([r.get(k) for k in shown]) for p in outputs.rglob("eval/*/*.jsonl") for r in _rows(p)]
    texts += [name for name, f, _ in config.keys(tuple(config.sections()))] + list(cli.COMMANDS)
    texts += [" ".join(config.choices(f)) for _, f, _ in config.keys(tuple(config.sections()))]
    texts += list(i18n.ZH.values()) + ["Language English fastmath GB"]  # the switch names both languages
    return {w for text in texts for w in re.findall(r"[A-Za-z][A-Za-z']+", text)}


def _rows(path: Path) -> list[dict]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip().endswith("}")]


def test_every_page_in_chinese_whole_at_800_and_1400_px_with_nothing_fetched(browser, damaged_app, tmp_path):
    """中文: no English word the app itself draws on any page; no figure cut at 1400 or 800 px; the
    browser asks nothing of any host but the app (checked by the fixture once every test has run)."""
    from playwright.sync_api import expect

    _, outputs, _ = damaged_app
    allowed = _allowed_words(outputs)
    page = _watched(browser, damaged_app)
    page.get_by_text("中文").click()
    expect(page.get_by_role("heading", name="运行列表", exact=True, level=1)).to_be_visible()
    english = {}
    for width in (1400, 800):
        for title in ("运行列表", "运行", "训练", "对比", "题目分析", "解题"):
            page.set_viewport_size({"width": width, "height": 1000})
            _open(page, title)
            if title == "运行":
                _choose(page, "运行", DAMAGED)  # its messages too
            english[title] = sorted(_text_words(page) - allowed)
            assert page.evaluate(CUT_FIGURES) == [], (title, width)
            if title in ("运行", "题目分析", "训练"):
                _screenshot(page, f"{title}-{width}", tmp_path, width=width)
    left = {title: words for title, words in english.items() if words}
    assert not left, left
    page.close()
