"""Payments in Chromium: the collections columns, the links to Stripe and Recovered."""

import itertools
from datetime import UTC, datetime

import pytest

from finance_core.feed.ingest import StripeEvent, ingest_event
from finance_core.store import migrate
from finance_core.store.db import make_engine
from tests.support import browser as browser_fixtures
from tests.support import stripe_factory as sf
from tests.support.accounts import TEAM, add_users
from tests.support.browser import PASSWORD, open_page, screenshot, sign_in, wait_until_idle

# The fixtures: one Chromium, `streamlit run app.py` on this module's `store`, a fresh page.
browser = browser_fixtures.browser
dashboard_url = browser_fixtures.dashboard_url
page = browser_fixtures.page

pytestmark = pytest.mark.browser
DAY = 86_400
_ids = itertools.count(1)


def feed(engine, event_type: str, obj: dict, *, days_ago: float) -> None:
    created = int(datetime.now(UTC).timestamp() - days_ago * DAY)
    event = sf.event(event_type, obj, created=created, event_id=f"evt_pb_{next(_ids)}")
    ingest_event(
        engine=engine, event=StripeEvent.from_payload(event), received_at=datetime.now(UTC)
    )


def collections_invoice(invoice_id: str, status: str, *, next_attempt: int | None = None) -> dict:
    obj = sf.invoice(invoice_id, status, subscription_id="sub_1", attempt_count=2)
    obj["customer"] = "cus_42"
    obj["lines"] = {"data": [{"price": {"id": "price_1", "product": "prod_team"}}]}
    obj["next_payment_attempt"] = next_attempt
    return obj


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """A failing Team invoice on a subscription now on Pro, and one recovered invoice."""
    url = f"sqlite:///{tmp_path_factory.mktemp('payments-browser')}/finance.db"
    engine = make_engine(url)
    migrate.upgrade(engine)
    add_users(engine, TEAM, PASSWORD)
    feed(engine, "product.created", sf.product("prod_team", "Team"), days_ago=60)
    feed(engine, "product.created", sf.product("prod_pro", "Pro"), days_ago=60)
    subscription = sf.subscription("sub_1", "active", "prod_pro")
    feed(engine, "customer.subscription.created", subscription, days_ago=50)
    retry = int(datetime.now(UTC).timestamp()) + 2 * DAY
    failing = collections_invoice("in_1", "open", next_attempt=retry)
    feed(engine, "invoice.payment_failed", failing, days_ago=2)
    feed(engine, "invoice.payment_failed", collections_invoice("in_r", "open"), days_ago=5)
    feed(engine, "invoice.paid", collections_invoice("in_r", "paid"), days_ago=3)
    engine.dispose()
    return url


def grid_text(grid, role: str) -> list[str]:
    """The cells of a role in the grid's accessible table (the grid itself is a canvas)."""
    return [cell.strip() for cell in grid.locator(f"[role={role}]").all_text_contents()]


def test_payments_shows_collections_columns_stripe_links_and_recovered(page):
    sign_in(page, "fiona")
    open_page(page, "Payments")
    invoices = page.get_by_test_id("stDataFrame").nth(1)
    invoices.locator("[role=gridcell]").first.wait_for(state="attached")
    assert grid_text(invoices, "columnheader") == [
        "Invoice",
        "Customer",
        "Plan",
        "Subscription",
        "Amount due",
        "Attempts",
        "Next retry",
        "Failing since (UTC)",
    ]
    cells = grid_text(invoices, "gridcell")
    assert cells[:6] == [
        "https://dashboard.stripe.com/test/invoices/in_1",
        "https://dashboard.stripe.com/test/customers/cus_42",
        "Team",  # the invoice's own plan, though its subscription moved to Pro
        "sub_1",
        "29.00 USD",
        "2",
    ]
    assert cells[6].endswith(" UTC")
    page.get_by_role("heading", name="Recovered").wait_for()
    recovered = page.get_by_test_id("stDataFrame").nth(2)
    assert grid_text(recovered, "gridcell") == ["USD", "1", "29.00 USD"]
    page.get_by_text(
        "Recovery rate 100%: of the invoices that started failing in the last 30"
    ).wait_for()
    screenshot(page, "payments-collections")

    page.get_by_role("radio", name="Last 7 days").click()
    page.get_by_text("started failing in the last 7 days", exact=False).wait_for()
    wait_until_idle(page)
    assert grid_text(page.get_by_test_id("stDataFrame").nth(2), "gridcell") == [
        "USD",
        "1",
        "29.00 USD",
    ]
