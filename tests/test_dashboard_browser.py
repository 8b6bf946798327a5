"""End to end: `streamlit run app.py` driven in Debian's headless Chromium through Playwright."""

import itertools
import os
import re
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

from dashboard import PLOTLY_WARM_UP_KEY
from finance_core.feed import handlers
from finance_core.feed.ingest import StripeEvent, ingest_event
from finance_core.store import migrate
from finance_core.store.db import make_engine, read_transaction
from finance_core.views.queries import stripe_sync_status, subscription_summary
from tests.conftest import skip_or_fail
from tests.support import stripe_factory as sf
from tests.support.accounts import TEAM, add_users
from tests.support.postgres import free_port

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
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
ACTIVE = ["active", "trialing", "past_due"]
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
    for n, product_id in enumerate(["prod_pro"] * 5 + ["prod_starter"] * 3):
        feed(
            engine,
            "customer.subscription.created",
            sf.subscription(f"sub_{n}", "active", product_id),
        )
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


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('browser')}/finance.db"
    prepare_store(url)
    return url


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
    page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True).click()
    page.get_by_role("heading", name=title).wait_for()
    wait_until_idle(page)


def choose(page, label, option):
    """Pick an option of a selectbox.

    The dropdown closes when the page scrolls, and Playwright scrolls to reach a low
    selectbox just before clicking: scroll first, then open, once more if it closed.
    """
    wait_until_idle(page)
    box = page.get_by_test_id("stSelectbox").filter(has=page.get_by_role("combobox", name=label))
    pick(page, box, box.get_by_role("button", name="Open"), option)


def pick(page, box, opener, option):
    """Scroll `box` into view, open its dropdown with `opener`, again if it closed; pick."""
    box.scroll_into_view_if_needed()
    choice = page.get_by_role("option", name=option, exact=True)
    for _ in range(3):
        opener.click()
        try:
            choice.wait_for(timeout=2_000)
            break
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
    choice.click()


def screenshot(page, name):
    """Keep a picture of the page in test-artifacts/ for a human to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    wait_until_idle(page)
    page.wait_for_timeout(500)  # plotly draws after the script run ends
    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)


def api_numbers(url):
    engine = make_engine(url)
    try:
        now = datetime.now(UTC)
        with read_transaction(engine) as conn:
            return (
                subscription_summary(conn=conn, active_statuses=ACTIVE, now=now),
                stripe_sync_status(conn=conn, delayed_after=600, now=now),
            )
    finally:
        engine.dispose()


def test_overview_after_sign_in_shows_the_apis_numbers_and_a_chart(page, store):
    sign_in(page, "fiona")
    values = metric_values(page)
    summary, status = api_numbers(store)
    assert list(values) == [
        "Active subscriptions",
        "Webhook health",
        "Failed payments",
        "Last webhook",
    ]
    assert int(values["Active subscriptions"].replace(",", "")) == summary.active_subscriptions
    assert values["Active subscriptions"] == "8"
    assert values["Webhook health"].lower() == status.webhook_health.value == "error"
    assert int(values["Failed payments"]) == status.failed_payments_count == 1
    assert values["Last webhook"].endswith("ago") or values["Last webhook"] == "just now"
    page.locator(".js-plotly-plot").first.wait_for()
    page.get_by_text(status.health_reason.capitalize()).wait_for()
    # How the numbers moved: all eight subscriptions are new today; no listener has kept a
    # failed payments count yet, so that change is not known.
    deltas = page.get_by_test_id("stMetricDelta")
    assert [text.strip() for text in deltas.all_inner_texts()] == ["8"]
    page.get_by_text("since yesterday", exact=True).wait_for()
    page.get_by_text("+8 since 7 days ago").wait_for()
    page.get_by_text("Changes not known yet: counted once a day").wait_for()
    page.get_by_text("8 active, 0 trialing, 0 past due").wait_for()
    revenue = page.get_by_role("link", name="Revenue in the Stripe Dashboard")
    assert revenue.get_attribute("href") == "https://dashboard.stripe.com/test/revenue"
    screenshot(page, "overview")


def test_the_login_cookie_survives_a_reload_until_logout(page):
    sign_in(page, "fiona")
    metric_values(page)
    wait_until_idle(page)
    page.reload()
    assert "Active subscriptions" in metric_values(page)  # signed in again from the cookie

    page.get_by_role("button", name="Log out").click()
    page.get_by_text("You have logged out.").wait_for()
    wait_until_idle(page)
    page.reload()
    page.get_by_role("textbox", name="Username").wait_for()
    assert page.get_by_test_id("stMetric").count() == 0


def test_wrong_password_shows_an_error_and_no_data(page):
    sign_in(page, "fiona", "not the password")
    page.get_by_text("Wrong username or password.").wait_for()
    assert page.get_by_test_id("stMetric").count() == 0
    assert page.locator(".js-plotly-plot g.point").count() == 0  # no bar of any chart


def test_the_sign_in_page_loads_plotly_off_screen_and_without_data(page):
    """Plotly's scripts load while the viewer types; nobody sees the chart that loads them."""
    page.get_by_role("textbox", name="Username").wait_for()
    warm_up = page.locator(f".st-key-{PLOTLY_WARM_UP_KEY} .js-plotly-plot")
    warm_up.wait_for(state="attached")
    box = warm_up.bounding_box()
    assert box is not None and box["x"] + box["width"] <= 0
    assert page.locator(".js-plotly-plot g.point").count() == 0
    sign_in(page, "fiona")
    metric_values(page)
    assert page.locator(f".st-key-{PLOTLY_WARM_UP_KEY}").count() == 0


def test_a_user_without_a_role_sees_only_the_forbidden_page(page, dashboard_url):
    sign_in(page, "nora")
    page.get_by_role("heading", name="No access").wait_for()
    assert page.get_by_test_id("stMetric").count() == 0
    assert page.get_by_test_id("stSidebarNav").count() == 0
    wait_until_idle(page)
    page.goto(f"{dashboard_url}/payments")  # any page's address: the same, in words
    page.get_by_role("heading", name="No access").wait_for()
    wait_until_idle(page)
    assert page.get_by_text("Page not found").count() == 0
    assert page.get_by_test_id("stMetric").count() == 0


def test_event_log_filter_narrows_the_rows(page):
    sign_in(page, "fiona")
    metric_values(page)
    open_page(page, "Events")
    page.get_by_text(re.compile(r"^14 matching events ·")).wait_for()
    screenshot(page, "events")
    choose(page, "Status", "failed")
    page.get_by_text(re.compile(r"^2 matching events ·")).wait_for()
    choose(page, "Type", "product.created")
    page.get_by_text(re.compile(r"^1 matching event ·")).wait_for()
    assert page.get_by_role("button", name="Download CSV").is_visible()


def test_admin_replays_the_fixed_event_and_dismisses_the_broken_one(page, store):
    sign_in(page, "ada")
    metric_values(page)
    open_page(page, "Webhooks")
    screenshot(page, "webhooks")
    # The error too long for its cell, whole below the table.
    page.get_by_text("Errors in full (1)").click()
    whole = "evt_broken: MalformedObject: subscription has no 'status' string (got NoneType)"
    page.get_by_text(whole, exact=True).wait_for()
    choose(page, "Failed event", "evt_bug · product.created")
    page.get_by_role("button", name="Replay").click()
    page.get_by_text("Replayed evt_bug: processed (kept payload).").wait_for()

    choose(page, "Failed event", "evt_broken · customer.subscription.updated")
    page.get_by_role("button", name="Replay").click()
    page.get_by_text("Could not replay evt_broken: failed again").wait_for()
    page.get_by_role("button", name="Dismiss").click()
    page.get_by_text("Dismissed evt_broken").wait_for()
    page.get_by_text("No failed events").wait_for()

    _, status = api_numbers(store)
    assert status.unresolved_failed_events == 0
    assert status.webhook_health.value == "healthy"


def test_admin_opens_stripe_sync_which_says_what_to_configure(page):
    sign_in(page, "ada")
    metric_values(page)
    open_page(page, "Stripe sync")
    page.get_by_text("Sync is not configured.").wait_for()
    assert page.get_by_role("button", name="Sync now").is_disabled()
    page.get_by_text("No sync has run yet.").wait_for()
    screenshot(page, "stripe-sync")


def test_overview_to_payments_in_one_click_and_the_invoices_stripe_link(page, store):
    sign_in(page, "fiona")
    values = metric_values(page)
    page.get_by_role("link", name="See the failing invoices").click()
    page.get_by_role("heading", name="Payments").wait_for()
    wait_until_idle(page)
    _, status = api_numbers(store)
    assert int(values["Failed payments"]) == status.failed_payments_count == 1
    assert page.get_by_test_id("stMetricValue").first.inner_text().strip() == "1"
    # The invoice cell is a link to the invoice in Stripe's test-mode dashboard.
    grid = page.get_by_test_id("stDataFrame").last
    grid.wait_for()
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=stDataFrame] canvas')].length > 0"
    )
    screenshot(page, "payments")
    link = "https://dashboard.stripe.com/test/invoices/in_1"
    # The grid is drawn on a canvas: click where the first invoice's link is drawn. Stripe's
    # answer is stood in for: nothing leaves this machine.
    page.context.route("https://dashboard.stripe.com/**", lambda route: route.fulfill(body="ok"))
    box = grid.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + 16, box["y"] + 35 + 17)
    page.wait_for_timeout(300)
    with page.context.expect_page() as opened:
        page.mouse.click(box["x"] + 16, box["y"] + 35 + 17)
    opened.value.wait_for_load_state()
    assert opened.value.url == link
    opened.value.close()
    csv = page.get_by_role("button", name="Download CSV")
    with page.expect_download() as download:
        csv.click()
    text = Path(download.value.path()).read_text()
    assert link in text and "29.00,USD" in text
    assert page.get_by_role("button", name="Older →").is_disabled()


def test_trends_draws_its_charts(page):
    sign_in(page, "fiona")
    metric_values(page)
    open_page(page, "Trends")
    page.get_by_role("heading", name="Active subscriptions per plan").wait_for()
    charts = page.locator(".js-plotly-plot")
    charts.nth(1).wait_for()
    assert charts.count() == 2
    page.locator(".js-plotly-plot .scatterlayer .trace").first.wait_for(state="attached")
    screenshot(page, "trends")


def test_a_link_to_payments_opens_payments_once_signed_in(page, dashboard_url):
    page.goto(f"{dashboard_url}/payments")
    sign_in(page, "fiona")
    page.get_by_role("heading", name="Payments").wait_for()
    assert page.url == f"{dashboard_url}/payments"
    assert page.get_by_text("Page not found").count() == 0
