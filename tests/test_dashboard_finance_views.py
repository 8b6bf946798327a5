"""The Payments and Trends pages through Streamlit's AppTest, for every kind of viewer."""

import uuid
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from finance_core.feed.ingest import StripeEvent, ingest_event
from finance_core.store.db import read_transaction
from finance_core.views.queries import stripe_sync_status
from tests.support import apptest
from tests.support import stripe_factory as sf
from tests.support.apptest import feed, metrics, signed_in, texts

PAYMENTS, TRENDS = "pages/failed_payments.py", "pages/subscription_trends.py"

dashboard = apptest.dashboard  # the fixture: the test store, its users, no cache left over


def failing(engine, invoice_id, *, currency="usd", amount=2900, subscription_id="sub_1"):
    invoice = sf.invoice(invoice_id, "open", subscription_id=subscription_id, amount_due=amount)
    feed(engine, "invoice.payment_failed", {**invoice, "currency": currency})


def populate(engine):
    """Two plans, three failing invoices in three currencies, one recovered, one paid."""
    feed(engine, "product.created", sf.product("prod_pro", "Pro"))
    feed(engine, "customer.subscription.created", sf.subscription("sub_1", "active", "prod_pro"))
    feed(engine, "customer.subscription.created", sf.subscription("sub_2", "active", "prod_x"))
    failing(engine, "in_usd", amount=2900)
    failing(engine, "in_jpy", currency="jpy", amount=4500, subscription_id="sub_2")
    failing(engine, "in_kwd", currency="kwd", amount=5125, subscription_id="sub_unknown")
    failing(engine, "in_back")
    feed(engine, "invoice.paid", sf.invoice("in_back", "paid", subscription_id="sub_1"))
    feed(engine, "invoice.paid", sf.invoice("in_paid", "paid", subscription_id="sub_1"))


def failed_payments_count(engine) -> int:
    with read_transaction(engine) as conn:
        return stripe_sync_status(
            conn=conn, delayed_after=600, now=datetime.now(UTC)
        ).failed_payments_count


def test_payments_lists_exactly_the_invoices_the_api_counts(dashboard):
    populate(dashboard)
    at = signed_in("fiona").switch_page(PAYMENTS).run()
    assert not at.exception
    totals, invoices = at.dataframe[0].value, at.dataframe[1].value
    assert len(invoices) == failed_payments_count(dashboard) == 3
    assert metrics(at)["Failing invoices"] == "3"
    assert list(invoices["Invoice"]) == [
        "https://dashboard.stripe.com/test/invoices/in_kwd",
        "https://dashboard.stripe.com/test/invoices/in_jpy",
        "https://dashboard.stripe.com/test/invoices/in_usd",
    ]
    assert list(invoices["Amount due"]) == ["5.125 KWD", "4,500 JPY", "29.00 USD"]
    # Invoices that name no product: the subscription's, by name, id while unnamed, or unknown.
    assert list(invoices["Plan"]) == ["", "prod_x", "Pro"]
    assert set(invoices["Customer"]) == {
        "https://dashboard.stripe.com/test/customers/cus_suite0001"
    }
    assert list(invoices["Next retry"]) == ["no more retries"] * 3
    assert list(invoices["Subscription"]) == ["sub_unknown", "sub_2", "sub_1"]
    assert list(invoices["Attempts"]) == [1, 1, 1]
    assert invoices["Failing since (UTC)"].notna().all()
    assert dict(zip(totals["Currency"], totals["Amount due"], strict=True)) == {
        "JPY": "4,500 JPY",
        "KWD": "5.125 KWD",
        "USD": "29.00 USD",
    }
    assert at.get("download_button")


def test_a_recovered_invoice_leaves_the_payments_page(dashboard):
    populate(dashboard)
    at = signed_in("fiona").switch_page(PAYMENTS).run()
    assert "https://dashboard.stripe.com/test/invoices/in_usd" in list(
        at.dataframe[1].value["Invoice"]
    )
    feed(dashboard, "invoice.paid", sf.invoice("in_usd", "paid", subscription_id="sub_1"))
    next(b for b in at.button if b.label == "Refresh").click().run()
    invoices = at.dataframe[1].value
    assert "https://dashboard.stripe.com/test/invoices/in_usd" not in list(invoices["Invoice"])
    assert len(invoices) == failed_payments_count(dashboard) == 2


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_payments_pages_through_the_invoices_in_sql(dashboard):
    for n in range(55):
        failing(dashboard, f"in_{n:03d}")
    at = signed_in("fiona").switch_page(PAYMENTS).run()
    first = at.dataframe[1].value
    assert len(first) == 50 and "Showing 1–50 of 55" in texts(at)
    next(b for b in at.button if b.label == "Older →").click().run()
    second = at.dataframe[1].value
    assert len(second) == 5 and not set(second["Invoice"]) & set(first["Invoice"])
    next(b for b in at.button if b.label == "← Newer").click().run()
    assert list(at.dataframe[1].value["Invoice"]) == list(first["Invoice"])


def test_live_invoices_link_to_the_live_dashboard(dashboard):
    feed(
        dashboard,
        "invoice.payment_failed",
        {**sf.invoice("in_live", "open"), "livemode": True},
        livemode=True,
    )
    at = signed_in("fiona").switch_page(PAYMENTS).run()
    assert list(at.dataframe[1].value["Invoice"]) == [
        "https://dashboard.stripe.com/invoices/in_live"
    ]


def fed_at(engine, event_type, obj, *, days_ago: float) -> None:
    """An event created that many days ago (Recovered windows are relative to now)."""
    created = int(datetime.now(UTC).timestamp() - days_ago * 86_400)
    event = sf.event(event_type, obj, created=created)
    ingest_event(
        engine=engine, event=StripeEvent.from_payload(event), received_at=datetime.now(UTC)
    )


def collections_invoice(invoice_id, status, *, product="prod_pro", next_attempt=None, **fields):
    obj = sf.invoice(invoice_id, status, subscription_id="sub_1", **fields)
    obj["customer"] = "cus_42"
    obj["lines"] = {"data": [{"price": {"id": "price_1", "product": product}}]}
    obj["next_payment_attempt"] = next_attempt
    return obj


def test_payments_shows_the_invoices_own_plan_next_retry_and_recovered(dashboard):
    feed(dashboard, "product.created", sf.product("prod_pro", "Pro"))
    feed(dashboard, "product.created", sf.product("prod_team", "Team"))
    feed(dashboard, "customer.subscription.created", sf.subscription("sub_1", "active", "prod_pro"))
    retry = int(datetime.now(UTC).timestamp()) + 2 * 86_400
    failing = collections_invoice("in_1", "open", product="prod_team", next_attempt=retry)
    fed_at(dashboard, "invoice.payment_failed", {**failing, "attempt_count": 3}, days_ago=2)
    for n, (failed, closed, how) in enumerate([(5, 3, "paid"), (25, 20, "paid"), (28, 25, "void")]):
        fed_at(
            dashboard,
            "invoice.payment_failed",
            collections_invoice(f"in_r{n}", "open"),
            days_ago=failed,
        )
        event_type = "invoice.paid" if how == "paid" else "invoice.voided"
        fed_at(dashboard, event_type, collections_invoice(f"in_r{n}", how), days_ago=closed)

    at = signed_in("fiona").switch_page(PAYMENTS).run()
    assert not at.exception
    _totals, invoices, recovered = (frame.value for frame in at.dataframe)
    [row] = invoices.to_dict("records")
    assert row["Customer"] == "https://dashboard.stripe.com/test/customers/cus_42"
    assert row["Plan"] == "Team"  # the invoice's own, not the subscription's Pro
    assert row["Attempts"] == 3
    assert row["Next retry"] == f"{datetime.fromtimestamp(retry, UTC):%Y-%m-%d %H:%M} UTC"
    # Recovered, 30 days by default: in_r0 and in_r1 paid; of in_r0..2 closed, 2 of 3 paid.
    assert recovered.to_dict("records") == [
        {"Currency": "USD", "Invoices": 2, "Amount paid": "58.00 USD"}
    ]
    assert "Recovery rate 67%: of the invoices that started failing in the last 30 days" in texts(
        at
    )
    at.segmented_control(key="recovered_window").set_value("Last 7 days").run()
    assert at.dataframe[2].value.to_dict("records") == [
        {"Currency": "USD", "Invoices": 1, "Amount paid": "29.00 USD"}
    ]
    assert "Recovery rate 100%: of the invoices that started failing in the last 7 days" in texts(
        at
    )


def test_the_overview_links_failed_payments_to_the_payments_page(dashboard):
    populate(dashboard)
    at = signed_in("fiona")
    assert metrics(at)["Failed payments"] == "3"
    (link,) = at.get("page_link")
    assert link.proto.label == "See the failing invoices"
    assert link.proto.page.endswith("payments")


def test_trends_show_the_history_per_plan_and_per_week(dashboard):
    now = datetime.now(UTC)
    feed(dashboard, "product.created", sf.product("prod_pro", "Pro"))
    started = {}
    for n in range(4):  # started in Stripe four to ten days ago, all received now
        sub = sf.subscription(f"sub_{n}", "active", "prod_pro")
        started[n] = int((now - timedelta(days=10 - 2 * n)).timestamp())
        sub.update(start_date=started[n], created=started[n])
        feed(dashboard, "customer.subscription.created", sub, at=now)
    gone = sf.subscription("sub_0", "canceled", "prod_pro")
    ended = int((now - timedelta(days=1)).timestamp())
    gone.update(start_date=started[0], created=started[0], canceled_at=ended, ended_at=ended)
    feed(dashboard, "customer.subscription.deleted", gone, at=now)

    at = signed_in("fiona").switch_page(TRENDS).run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 2
    # The store began today: the earlier days are Stripe's dates, and the page says so.
    observed = f"Observed since {now:%Y-%m-%d}. Earlier days are reconstructed"
    assert any(caption.value.startswith(observed) for caption in at.caption)
    plans, weeks = (frame.value for frame in at.dataframe)
    assert list(plans["Plan"]) == ["Pro"]
    # 90 days ago the plan had no subscription yet (nothing, not zero); today 3.
    assert pd.isna(plans.iloc[0, 1]) and plans.iloc[0, 2] == 3 and plans.iloc[0, 3] == 3
    assert weeks["New"].sum() == 4 and weeks["Canceled"].sum() == 1
    assert (weeks["Net"] == weeks["New"] - weeks["Canceled"]).all()

    at.segmented_control(key="trends_window").set_value("30 days").run()
    assert not at.exception and len(at.get("plotly_chart")) == 2
    at.segmented_control(key="trends_window").set_value("365 days").run()
    assert len(at.dataframe[1].value) >= 52


def test_empty_store_pages_say_so(dashboard):
    at = signed_in("fiona").switch_page(PAYMENTS).run()
    assert not at.exception
    assert "No failing payments" in texts(at)
    at.switch_page(TRENDS).run()
    assert not at.exception
    assert "No active subscriptions in this period." in texts(at)
    assert "No subscription started or was canceled in this period." in texts(at)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_admins_see_both_pages_and_a_viewer_without_a_role_neither(dashboard):
    populate(dashboard)
    at = signed_in("ada")
    for page in (PAYMENTS, TRENDS):
        at.switch_page(page).run()
        assert not at.exception, page
        assert at.dataframe, page

    at = signed_in("nora")
    assert [title.value for title in at.title] == ["No access"]
    for page in (PAYMENTS, TRENDS):
        with pytest.raises(ValueError):
            at.switch_page(page)
    assert not at.dataframe and not at.get("plotly_chart")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_events_page_says_how_long_events_are_kept(dashboard, monkeypatch):
    monkeypatch.setenv("EVENT_RETENTION_DAYS", "45")
    apptest.forget()
    at = signed_in("fiona").switch_page("pages/events.py").run()
    assert "kept for 45 days (EVENT_RETENTION_DAYS)" in texts(at)
    assert "failed events stay until they are replayed or dismissed" in texts(at)


def test_plan_names_in_the_trends_chart_stay_text():
    """Plotly draws `<a>` and fills `%{...}` in labels: a product's name must do neither."""
    from dashboard import charts
    from finance_core.views.trends import PlanSeries

    day = datetime(2026, 12, 1, tzinfo=UTC).date()
    name = "<a href='https://evil.example'>Pro</a> %{y}"
    plan = PlanSeries(uuid.uuid4(), "prod_x", name, (day,), (1,))
    (trace,) = charts.active_per_plan_per_day([plan]).data
    assert "<a" not in trace.name and "%{y}" not in trace.name
    assert "<a" not in trace.hovertemplate and trace.hovertemplate.count("%{y") == 1
    assert trace.name == "&lt;a href='https://evil.example'&gt;Pro&lt;/a&gt; %&#123;y}"
