"""End to end in a real browser: `streamlit run app.py` driven by Playwright in Debian's chromium.

Never `playwright install` (it downloads a browser): the project's install step puts Debian's
chromium at /usr/bin/chromium. Screenshots go to the test's tmp dir, and to $FASTMATH_SCREENSHOTS
when set (`FASTMATH_SCREENSHOTS=docs/screenshots` refreshes the README's).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

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
# Every text the streamed answer showed, recorded in the page as the DOM changes.
RECORD_STREAM = """() => {
  window.streamed = [];
  new MutationObserver(() => {
    for (const el of document.querySelectorAll('[data-testid="stText"]')) {
      const text = el.innerText;
      if (text && window.streamed[window.streamed.length - 1] !== text) window.streamed.push(text);
    }
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


@pytest.fixture(scope="module")
def app_url(overfit_run, tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip(f"no {CHROMIUM}: `make install` installs Debian's chromium (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="playwright is in requirements.txt: `make install`")
    outputs = build_app_outputs(overfit_run, tmp_path_factory.getbasetemp())
    port = free_port()
    log = tmp_path_factory.mktemp("streamlit") / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1", "--", "--outputs", str(outputs)],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
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


def _screenshot(page, name: str, tmp_path: Path) -> None:
    """Once the script run is over (Streamlit's running indicator gone), in the test's tmp dir and
    in $FASTMATH_SCREENSHOTS."""
    from playwright.sync_api import expect

    expect(page.get_by_test_id("stStatusWidget")).to_be_hidden()
    targets = [tmp_path]
    if os.environ.get("FASTMATH_SCREENSHOTS"):
        targets.append(Path(os.environ["FASTMATH_SCREENSHOTS"]))
    for folder in targets:
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def _choose(page, label: str, option: str) -> None:
    page.get_by_role("combobox", name=label).click()
    page.get_by_role("option", name=option, exact=True).click()


def _open(page, title: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title, exact=True).click()
    page.get_by_role("heading", name=title, exact=True, level=1).wait_for()


def test_browser_runs_run_problems_and_a_streamed_answer(app_url, overfit_run, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    problem = _gsm8k(GSM8K_TRAIN, 1)[0]
    gold = gold_from_answer(problem["answer"])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1400})
        page.set_default_timeout(60_000)
        page.goto(app_url)
        page.get_by_role("heading", name="Runs", exact=True, level=1).wait_for()
        expect(page.get_by_test_id("stDataFrame").first).to_be_visible()
        _screenshot(page, "runs", tmp_path)

        _open(page, "Run")
        _choose(page, "Run", overfit_run.name)
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
        _choose(page, "Adapter", overfit_run.name)
        page.get_by_label("Problem (English or Chinese)").fill(problem["question"])
        page.evaluate(RECORD_STREAM)
        page.get_by_role("button", name="Solve").click()
        expect(page.get_by_text(f"Answer: {gold}")).to_be_visible(timeout=120_000)  # the first load imports torch
        streamed = page.evaluate("window.streamed")
        growing = [t for t in streamed if t.endswith("▌")]  # the answer while it was being written
        assert len(growing) >= 2, streamed
        assert all(len(a) <= len(b) for a, b in zip(growing, growing[1:], strict=False)), streamed
        expect(page.locator("mark", has_text=gold)).to_be_visible()
        _screenshot(page, "solve", tmp_path)

        # Stop: the untrained base model runs on for hundreds of tokens; stop it after the first ones
        _choose(page, "Adapter", "(none: the base model alone)")
        page.get_by_label("Problem (English or Chinese)").fill("小明有 5 个苹果，又买了 7 个。他一共有多少个苹果？")
        page.get_by_role("button", name="Solve").click()
        page.get_by_test_id("stText").filter(has_text="▌").wait_for()
        page.get_by_test_id("stMain").get_by_role("button", name="Stop").click()
        expect(page.get_by_text("Stopped before the model finished.")).to_be_visible()
        browser.close()
