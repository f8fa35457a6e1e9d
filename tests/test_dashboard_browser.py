"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

One daemon with an API token for the module; each test drives the page the way a
person would and waits on what the page shows (Playwright's auto-waiting locators),
never on sleeps. Screenshots go to ``$JOBRUNNER_SCREENSHOTS`` when set (the README's
come from ``JOBRUNNER_SCREENSHOTS=docs/screenshots``), else to a temporary folder.

Skipped, with the reason printed, where the browser or Playwright is missing
(``.ci/run`` installs both when it can).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pytest

from tests.test_dashboard import MODULES, TOPICS, W
from tests.test_http import Daemon

if TYPE_CHECKING:  # imported at run time below, or the module is skipped
    from playwright.sync_api import Browser, Page

CHROMIUM = os.environ.get("JOBRUNNER_CHROMIUM", "/usr/bin/chromium")
TOKEN = "browser-s3cret"

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
if not Path(CHROMIUM).exists():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

expect = sync_api.expect


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("browser"), TOPICS, env=MODULES,
               http=f'token = "{TOKEN}"', token=TOKEN).start()
    yield d
    d.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("JOBRUNNER_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def open_dashboard(browser: Browser, daemon: Daemon, *, scheme: Literal["light", "dark"] = "light",
                   viewport: tuple[int, int] = (1280, 860)) -> Page:
    """A new tab on the dashboard, signed in with the token through the login form."""
    context = browser.new_context(color_scheme=scheme, viewport={"width": viewport[0], "height": viewport[1]})
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto(daemon.url + "/")
    page.locator("#login-token").fill(TOKEN)
    page.locator("#login-form button[type=submit]").click()
    expect(page.locator("#live")).to_have_text("live")
    return page


@pytest.fixture
def page(browser: Browser, daemon: Daemon) -> Iterator[Page]:
    opened = open_dashboard(browser, daemon)
    yield opened
    opened.context.close()


def test_login_keeps_the_token_in_the_tab_only(page: Page) -> None:
    assert page.evaluate("sessionStorage.getItem('jobrunner.token')") == TOKEN
    assert page.evaluate("localStorage.getItem('jobrunner.token')") is None
    assert TOKEN not in page.url
    expect(page.locator("[data-topic=web]")).to_be_visible()


def test_jobs_appear_and_complete_live(page: Page, daemon: Daemon, tmp_path: Path, shots: Path) -> None:
    page.goto(daemon.url + "/#/jobs?topic=web")
    expect(page.locator("#rows")).to_be_visible()
    gate = tmp_path / "gate"
    ids = [daemon.enqueue({"worker": f"{W}.Gated", "args": {"gate": str(gate), "n": n}})["id"] for n in range(3)]
    for job_id in ids:  # pushed by the stream: the page is not reloaded
        expect(page.locator(f"tr[data-job-id='{job_id}']")).to_be_visible()
    expect(page.locator(f"tr[data-job-id='{ids[0]}'] [data-state=executing]")).to_be_visible()
    page.screenshot(path=shots / "jobs-live.png")
    gate.touch()
    for job_id in ids:
        expect(page.locator(f"tr[data-job-id='{job_id}'] [data-state=completed]")).to_be_visible()
    # Filters: state narrows the table, and the URL (not the token) carries them.
    page.locator("[data-filter=state]").select_option("completed")
    expect(page.locator("#rows tr").first.locator("[data-state=completed]")).to_be_visible()
    assert "state=completed" in page.url


def test_a_discarded_job_shows_its_error_history_and_retry_runs_it(
    page: Page, daemon: Daemon, tmp_path: Path, shots: Path
) -> None:
    fix = tmp_path / "fix.toml"
    job = daemon.enqueue({"worker": f"{W}.Fragile", "args": {"fix": str(fix)}})
    daemon.wait_job(job["id"], lambda j: j["state"] == "discarded")
    page.goto(f"{daemon.url}/#/jobs/{job['id']}")
    expect(page.locator("h1 [data-state=discarded]")).to_be_visible()
    history = page.locator("#errors .attempt")
    expect(history).to_have_count(1)
    expect(history.first).to_contain_text("RuntimeError: configuration fix.toml is missing")
    expect(history.first.locator("[data-role=traceback]")).to_contain_text("_check_config")
    page.screenshot(path=shots / "job-error-history.png", full_page=True)
    fix.touch()
    page.locator("[data-action=retry]").click()
    expect(page.locator("h1 [data-state=completed]")).to_be_visible()
    expect(page.locator("[data-role=attempt]")).to_have_text("2 of 2")  # a retry grants one more attempt
    expect(history).to_have_count(1)  # the first attempt's error stays in the history


def test_pausing_a_topic_stops_claiming_until_resumed(page: Page, daemon: Daemon, shots: Path) -> None:
    card = page.locator("[data-topic=held]")
    card.locator("[data-action=pause]").click()
    expect(card.locator("[data-role=status]")).to_have_text("paused")
    job = daemon.enqueue({"worker": f"{W}.Held"})
    expect(card.locator("[data-count=available] b")).to_have_text("1")
    # Nothing may start while paused: watch ten poll intervals of the topic.
    watch_until = time.monotonic() + 1.0
    while time.monotonic() < watch_until:
        assert daemon.job(job["id"])["state"] == "available"
        time.sleep(0.05)
    page.screenshot(path=shots / "overview-paused.png", full_page=True)
    card.locator("[data-action=resume]").click()
    expect(card.locator("[data-role=status]")).to_have_text("running")
    assert daemon.wait_job(job["id"], lambda j: j["state"] == "completed")["result"] == "ran"
    expect(card.locator("[data-count=completed] b")).not_to_have_text("0")


def test_dark_theme_and_phone_width(browser: Browser, daemon: Daemon, shots: Path) -> None:
    for n in range(20):
        daemon.enqueue({"worker": f"{W}.Quick", "args": {"n": n}})
    page = open_dashboard(browser, daemon, scheme="dark")
    try:
        expect(page.locator("[data-topic=web] .chart rect").first).to_be_attached()
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(15, 19, 25)", background
        page.screenshot(path=shots / "overview-dark.png", full_page=True)
    finally:
        page.context.close()
    phone = open_dashboard(browser, daemon, viewport=(390, 844))
    try:
        phone.goto(daemon.url + "/#/jobs")
        expect(phone.locator("#rows tr").first).to_be_visible()
        width = phone.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width}px wide on a 390px phone"
        phone.screenshot(path=shots / "jobs-phone.png")
    finally:
        phone.context.close()


def test_screenshots_are_written(shots: Path) -> None:
    names = {p.name for p in shots.glob("*.png")}
    assert {"jobs-live.png", "job-error-history.png", "overview-paused.png"} <= names
    assert shutil.disk_usage(shots).free > 0
