"""The browser suites' parts: a prepared store, `streamlit run app.py`, Chromium, sign-in."""

import itertools
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright
from sqlalchemy import func, select

from finance_core.access.sign_in import Lock
from finance_core.feed import handlers
from finance_core.feed.ingest import StripeEvent, ingest_event
from finance_core.store import migrate
from finance_core.store.db import make_engine, read_transaction
from finance_core.store.models import audit_log
from tests.conftest import skip_or_fail
from tests.support import stripe_factory as sf
from tests.support.accounts import TEAM, add_users
from tests.support.postgres import free_port

ROOT = Path(__file__).resolve().parent.parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless=new",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
COOKIE_KEY = "browser-test-cookie-key-0123456789abcdefgh"
PASSWORD = "correct horse battery"
TIMEOUT_MS = 20_000
_created = itertools.count(1_790_000_000)


def feed(engine, event_type, obj, *, event_id=None):
    event = sf.event(event_type, obj, event_id=event_id, created=next(_created))
    ingest_event(
        engine=engine, event=StripeEvent.from_payload(event), received_at=datetime.now(UTC)
    )


def prepare_store(url: str) -> None:
    """Users, plans, subscriptions, failing invoices, and two failed events."""
    engine = make_engine(url)
    migrate.upgrade(engine)
    add_users(engine, TEAM, PASSWORD)
    for product_id, name in [("prod_pro", "Pro"), ("prod_starter", "Starter")]:
        feed(engine, "product.created", sf.product(product_id, name))
    today = int(time.time())  # started today: the Overview's change since yesterday is +8
    for n, product_id in enumerate(["prod_pro"] * 5 + ["prod_starter"] * 3):
        subscription = sf.subscription(f"sub_{n}", "active", product_id)
        subscription["created"] = subscription["start_date"] = today
        feed(engine, "customer.subscription.created", subscription)
    feed(
        engine, "customer.subscription.created", sf.subscription("sub_gone", "canceled", "prod_pro")
    )
    feed(engine, "invoice.payment_failed", sf.invoice("in_1", "open", subscription_id="sub_1"))
    # Still malformed on replay: the admin dismisses it.
    broken = sf.subscription("sub_broken", "active", "prod_pro")
    del broken["status"]
    feed(engine, "customer.subscription.updated", broken, event_id="evt_broken")

    # Failed under a buggy handler; the dashboard process runs the fixed code, so a
    # replay from there succeeds.
    def buggy(conn, event, received_at):
        raise RuntimeError("a bug in our product handler")

    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(handlers.HANDLERS, "product.created", buggy)
        feed(engine, "product.created", sf.product("prod_biz", "Business"), event_id="evt_bug")
    engine.dispose()


@contextmanager
def running_dashboard(store: str, log_path: Path, **settings: str) -> Iterator[str]:
    """`streamlit run app.py` on a free port against `store`, with `settings`; its URL."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("STRIPE_")},  # no API key
        "DATABASE_URL": store,
        "DASHBOARD_COOKIE_KEY": COOKIE_KEY,
        "PYTHONUNBUFFERED": "1",
        **settings,
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                "app.py",
                "--server.headless",
                "true",
                "--server.port",
                str(port),
                "--server.address",
                "127.0.0.1",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"streamlit exited early:\n{log_path.read_text()}")
            try:
                if httpx.get(f"{url}/_stcore/health", timeout=2).text == "ok":
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit did not start:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        assert "Traceback" not in log_path.read_text(), log_path.read_text()


@pytest.fixture(scope="module")
def dashboard_url(store, tmp_path_factory) -> Iterator[str]:
    """`streamlit run app.py` on a free port, against the prepared store."""
    with running_dashboard(store, tmp_path_factory.mktemp("streamlit") / "streamlit.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        skip_or_fail(f"no Chromium at {CHROMIUM}", package="chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, dashboard_url):
    """A fresh browser context (no cookies) on the dashboard's sign-in page."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(dashboard_url)
    yield page
    context.close()


def wait_until_idle(page, quiet_ms=600):
    """Wait until no script run has been going for `quiet_ms`.

    The login cookie's component reports back once after it mounts, which reruns the app;
    a form submitted during that rerun is lost, as it would be for a very fast human.
    """
    running = page.locator('[data-testid="stApp"][data-test-script-state="running"]')
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        if running.count():
            quiet_since = time.monotonic()
        elif (time.monotonic() - quiet_since) * 1000 >= quiet_ms:
            return
        page.wait_for_timeout(50)
    raise AssertionError("the app kept running")


def sign_in(page, username, password=PASSWORD):
    page.get_by_role("textbox", name="Username").wait_for()
    # The cookie component's report may come over a second after the form is drawn on a busy
    # machine (CI lost a Login to it with 600 ms): wait for a longer quiet.
    wait_until_idle(page, quiet_ms=2000)
    page.get_by_role("textbox", name="Username").fill(username)
    page.get_by_role("textbox", name="Password").fill(password)
    page.get_by_role("button", name="Login").click()


def metric_values(page) -> dict[str, str]:
    """The Overview's four metrics, read once Streamlit has stopped re-rendering them."""
    metrics = page.get_by_test_id("stMetric")
    metrics.nth(3).wait_for()
    wait_until_idle(page)
    # A rerun may still swap elements under us: read all four again until one pass succeeds.
    deadline = time.monotonic() + 20
    while True:
        try:
            values = {}
            for index in range(4):
                metric = metrics.nth(index)
                label = metric.get_by_test_id("stMetricLabel").inner_text(timeout=2000).strip()
                values[label] = (
                    metric.get_by_test_id("stMetricValue").inner_text(timeout=2000).strip()
                )
            return values
        except PlaywrightTimeout:
            if time.monotonic() > deadline:
                raise


def open_page(page, title):
    wait_until_idle(page)  # a click while the page still runs can be lost to its rerun
    page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True).click()
    page.get_by_role("heading", name=title).wait_for()
    wait_until_idle(page)


def screenshot(page, name):
    """Keep a picture of the page in test-artifacts/ for a human to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    wait_until_idle(page)
    page.wait_for_timeout(500)  # plotly draws after the script run ends
    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)


LOCKED = Lock(15 * 60).message


def new_page(browser, dashboard_url, cookies=None):
    """A fresh browser context (its own cookies, or the ones given) on the dashboard."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    if cookies:
        context.add_cookies(cookies)
    page = context.new_page()
    page.goto(dashboard_url)
    return page


def wait_for_attempts(store: str, username: str, count: int) -> None:
    """Until the store has audited `count` failed sign-ins for this username."""
    engine = make_engine(store)
    statement = select(func.count()).where(
        audit_log.c.action == "sign_in_failed", audit_log.c.target == username
    )
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    try:
        while time.monotonic() < deadline:
            with read_transaction(engine) as conn:
                if conn.execute(statement).scalar_one() >= count:
                    return
            time.sleep(0.05)
    finally:
        engine.dispose()
    raise AssertionError(f"the sign-in attempt {count} as {username} was never processed")


def choose(page, label, option):
    """Pick an option of a selectbox.

    The dropdown closes when the page scrolls or the app reruns: `pick` scrolls first and
    waits for a quiet app before it opens it.
    """
    wait_until_idle(page)
    box = page.get_by_test_id("stSelectbox").filter(has=page.get_by_role("combobox", name=label))
    pick(page, box, box.get_by_role("button", name="Open"), option)


def pick(page, box, opener, option):
    """Scroll `box` into view, wait for a quiet app, open its dropdown with `opener`; pick."""
    box.scroll_into_view_if_needed()
    wait_until_idle(page)
    opener.click()
    page.get_by_role("option", name=option, exact=True).click()
