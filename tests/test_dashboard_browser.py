"""End to end: `streamlit run app.py` driven in Debian's headless Chromium through Playwright."""

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dashboard import PLOTLY_WARM_UP_KEY
from finance_core.store.db import make_engine, read_transaction
from finance_core.views.queries import stripe_sync_status, subscription_summary
from tests.support import browser as browser_fixtures
from tests.support.browser import (
    choose,
    metric_values,
    open_page,
    prepare_store,
    screenshot,
    sign_in,
    wait_until_idle,
)

# The fixtures: one Chromium, `streamlit run app.py` on this module's `store`, a fresh page.
browser = browser_fixtures.browser
dashboard_url = browser_fixtures.dashboard_url
page = browser_fixtures.page

pytestmark = pytest.mark.browser

ACTIVE = ["active", "trialing", "past_due"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('browser')}/finance.db"
    prepare_store(url)
    return url


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
    no_access = page.get_by_role("heading", name="No access")
    sign_in(page, "nora")
    # While a rerun draws the page again, the last run's heading can still be there beside it.
    no_access.first.wait_for()
    wait_until_idle(page)
    assert no_access.count() == 1
    assert page.get_by_test_id("stMetric").count() == 0
    assert page.get_by_test_id("stSidebarNav").count() == 0
    page.goto(f"{dashboard_url}/payments")  # any page's address: the same, in words
    no_access.first.wait_for()
    wait_until_idle(page)
    assert no_access.count() == 1
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
