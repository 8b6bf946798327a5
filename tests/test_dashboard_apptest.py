"""The dashboard through Streamlit's AppTest: login, roles, every page, and the API's numbers."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from finance_core.alerts.samples import FAILED_PAYMENTS_DAILY_MEASURE, record_day_figure
from finance_core.feed import handlers
from finance_core.store.db import read_transaction
from finance_core.views.queries import status_breakdown, stripe_sync_status
from finance_core.views.queries import subscription_summary as api_summary
from tests.support import apptest
from tests.support import stripe_factory as sf
from tests.support.apptest import (
    METRICS,
    OIDC_SECRETS,
    PASSWORD,
    app,
    feed,
    forget,
    metrics,
    populate,
    shown,
    signed_in,
    texts,
)
from tests.support.postgres import free_port
from tests.support.reads import plan_counts

PAGES = ["pages/overview.py", "pages/plans.py", "pages/webhooks.py", "pages/events.py"]
ACTIVE = ["active", "trialing", "past_due"]

dashboard = apptest.dashboard  # the fixture: the test store, its users, no cache left over


def api_numbers(engine):
    now = datetime.now(UTC)
    with read_transaction(engine) as conn:
        return (
            api_summary(conn=conn, active_statuses=ACTIVE, now=now),
            stripe_sync_status(conn=conn, delayed_after=600, now=now),
        )


# --- signing in ------------------------------------------------------------------------


def test_signed_out_sees_the_login_form_and_no_data(dashboard):
    populate(dashboard)
    at = app().run()
    assert not at.exception
    assert [field.label for field in at.text_input] == ["Username", "Password"]
    assert not at.metric
    # Only the chart and the table that load their scripts while the viewer types, empty.
    (warm_up,) = at.get("plotly_chart")
    assert json.loads(warm_up.proto.spec)["data"] == []
    assert [frame.value.empty for frame in at.dataframe] == [True]
    assert "Pro" not in texts(at)


def test_wrong_password_shows_an_error_under_the_form_and_no_data(dashboard):
    populate(dashboard)
    at = app().run()
    at.text_input[0].input("fiona")
    at.text_input[1].input("not the password")
    at.button[0].click().run()
    assert not at.exception
    assert [error.value for error in at.error] == ["Wrong username or password."]
    assert not at.metric and all(frame.value.empty for frame in at.dataframe)
    assert at.session_state["authentication_status"] is False


def test_the_right_password_opens_the_overview_and_logout_closes_it(dashboard):
    populate(dashboard)
    at = app().run()
    at.text_input[0].input("fiona")
    at.text_input[1].input(PASSWORD)
    at.button[0].click().run()
    assert not at.exception
    assert list(metrics(at)) == METRICS
    assert "Fiona" in "\n".join(str(c.value) for c in at.sidebar.caption)

    at.sidebar.button[0].click().run()  # Log out
    assert not at.exception
    assert not at.metric
    assert [field.label for field in at.text_input] == ["Username", "Password"]
    assert "You have logged out." in texts(at)


def test_a_user_without_a_role_gets_the_forbidden_page_only(dashboard):
    populate(dashboard)
    at = signed_in("nora")
    assert not at.exception
    assert [title.value for title in at.title] == ["No access"]
    assert "finance" in at.error[0].value
    assert not at.metric and not at.dataframe and not at.get("plotly_chart")
    for page in PAGES:
        with pytest.raises(ValueError):
            at.switch_page(page)


def test_roles_come_from_the_store_on_every_run(dashboard):
    """A user removed from the store loses access at the next run, whatever the session says."""
    from finance_core.access.users import remove_user

    at = signed_in("fiona")
    assert list(metrics(at)) == METRICS
    remove_user(engine=dashboard, username="fiona", actor="tests", now=datetime.now(UTC))
    at.run()
    assert not at.metric
    assert "no longer exists" in texts(at)


# --- the pages, for a finance user -----------------------------------------------------


@pytest.mark.parametrize("with_failure", [True, False], ids=["failing", "healthy"])
def test_overview_numbers_equal_the_api(dashboard, with_failure):
    populate(dashboard, with_failure=with_failure)
    summary, status = api_numbers(dashboard)
    at = signed_in("fiona")
    assert not at.exception
    shown = metrics(at)
    assert int(shown["Active subscriptions"].replace(",", "")) == summary.active_subscriptions
    assert shown["Active subscriptions"] == "7"
    assert shown["Webhook health"].lower() == status.webhook_health.value
    assert shown["Webhook health"] == ("Error" if with_failure else "Healthy")
    assert int(shown["Failed payments"]) == status.failed_payments_count == 2
    assert shown["Last webhook"].endswith("ago") or shown["Last webhook"] == "just now"
    absolute = status.last_webhook_received.strftime("%Y-%m-%d %H:%M:%S UTC")
    assert absolute in texts(at)
    assert status.health_reason.capitalize() in texts(at)
    assert len(at.get("plotly_chart")) == 1
    links = {button.proto.url for button in at.get("link_button")}
    assert links == {summary.stripe_dashboard_url, status.stripe_dashboard_url}
    assert links == {
        "https://dashboard.stripe.com/test/revenue",
        "https://dashboard.stripe.com/test/payments",
    }


def test_overview_says_how_the_numbers_moved_and_what_active_is_made_of(dashboard):
    now = datetime.now(UTC)
    # Two subscriptions started 3 days ago and one 9 days ago, then today's nine (seven active).
    feed(dashboard, "product.created", sf.product("prod_pro", "Pro"))
    for n, days in [(0, 3), (1, 3), (2, 9)]:
        subscription = sf.subscription(f"sub_old_{n}", "active", "prod_pro")
        started = int((now - timedelta(days=days)).timestamp())
        subscription["created"] = subscription["start_date"] = started
        feed(dashboard, "customer.subscription.created", subscription, at=now)
    populate(dashboard, started=now)
    # The failed payments the alert job kept: 5 at yesterday's end, 1 a week ago (2 now).
    for days, count in [(7, 1), (1, 5)]:
        record_day_figure(
            engine=dashboard,
            measure=FAILED_PAYMENTS_DAILY_MEASURE,
            value=count,
            now=now - timedelta(days=days),
        )
    at = signed_in("fiona")
    assert not at.exception
    shown = {metric.label: metric for metric in at.metric}
    assert shown["Active subscriptions"].value == "10"
    assert shown["Active subscriptions"].delta == "7"  # the seven of today
    assert "+9 since 7 days ago" in texts(at)  # the one of 9 days ago was there already
    assert shown["Failed payments"].value == "2"
    assert shown["Failed payments"].delta == "-3"
    assert "+1 since 7 days ago" in texts(at)
    made_of = [text.value for text in at.text]
    assert "8 active, 1 trialing, 1 past due" in made_of
    meaning = at.expander[0]
    assert meaning.label == "What these numbers mean"
    assert "active, trialing, past due" in meaning.markdown[0].value


def test_overview_says_when_a_change_is_not_known_yet(dashboard):
    populate(dashboard, with_failure=False)  # no listener kept a failed payments count yet
    at = signed_in("fiona")
    assert not at.exception
    shown = {metric.label: metric for metric in at.metric}
    assert not shown["Failed payments"].delta
    assert "Changes not known yet: counted once a day from a listener's first day" in texts(at)
    assert "Change since" not in texts(at)  # one line for both, not one each


def test_every_page_renders_an_empty_store_with_messages_not_tracebacks(dashboard):
    at = signed_in("fiona")
    assert not at.exception
    shown = metrics(at)
    assert shown["Active subscriptions"] == "0"
    assert shown["Webhook health"] == "Delayed"
    assert shown["Last webhook"] == "never"
    assert "No webhook has arrived yet" in texts(at)
    for page in PAGES[1:]:
        at.switch_page(page).run()
        assert not at.exception, page
        assert at.info or at.success, page
    at.switch_page("pages/events.py").run()
    assert "No events match these filters." in texts(at)


def test_plans_page_table_and_breakdown_match_the_queries(dashboard):
    populate(dashboard)
    at = signed_in("fiona").switch_page("pages/plans.py").run()
    assert not at.exception
    with read_transaction(dashboard) as conn:
        plans = plan_counts(conn, ACTIVE)
        breakdown = status_breakdown(conn=conn)
    plan_table, status_table = (frame.value for frame in at.dataframe)
    assert list(plan_table["Plan"]) == [plan.plan_name for plan in plans]
    assert list(plan_table["Count"]) == [plan.count for plan in plans]
    assert plan_table["Share"].sum() == pytest.approx(100)
    assert dict(zip(status_table["Status"], status_table["Subscriptions"], strict=True)) == (
        breakdown
    )
    assert len(at.get("plotly_chart")) == 2
    assert "As of" in texts(at)
    assert [b.proto.url for b in at.get("link_button")] == [
        "https://dashboard.stripe.com/test/revenue"
    ]


def test_webhooks_page_for_finance_shows_failures_without_actions(dashboard):
    populate(dashboard)
    at = signed_in("fiona").switch_page("pages/webhooks.py").run()
    assert not at.exception
    assert "https://dashboard.stripe.com/test/events/evt_broken" in texts(at)
    failed = at.dataframe[-1].value
    assert list(failed["Type"]) == ["customer.subscription.updated"]
    assert "status" in failed["Error"][0]
    # Too long for its cell, the error is also shown whole below the table, as plain text.
    (in_full,) = [e for e in at.expander if e.label == "Errors in full (1)"]
    assert [text.value for text in in_full.text] == [f"evt_broken: {failed['Error'][0]}"]
    assert len(at.get("plotly_chart")) == 1
    assert not [b for b in at.button if b.label in ("Replay", "Dismiss")]
    assert "An admin can replay or dismiss" in texts(at)

    at.segmented_control(key="window").set_value("Last 7 days").run()
    assert not at.exception and len(at.get("plotly_chart")) == 1


def test_webhooks_page_lists_rejections_by_reason(dashboard):
    from finance_core.feed.rejections import record_rejection

    now = datetime.now(UTC)
    for reason in ["bad_signature", "bad_signature", "missing_signature"]:
        record_rejection(engine=dashboard, reason=reason, client_address="10.0.0.1", now=now)
    at = signed_in("fiona").switch_page("pages/webhooks.py").run()
    reasons = at.dataframe[0].value
    assert dict(zip(reasons["Reason"], reasons["Rejected"], strict=True)) == {
        "bad_signature": 2,
        "missing_signature": 1,
    }


def test_events_page_filters_and_pages_in_sql(dashboard):
    populate(dashboard)
    for n in range(60):
        feed(dashboard, "price.created", sf.price(f"price_{n}", "prod_pro"))
    at = signed_in("fiona").switch_page("pages/events.py").run()
    assert not at.exception
    first = at.dataframe[0].value
    assert len(first) == 50
    assert first["Event"][0].startswith("https://dashboard.stripe.com/test/events/")

    older = next(b for b in at.button if b.label == "Older →")
    older.click().run()
    second = at.dataframe[0].value
    assert len(second) == 76 - 50  # 3 products, 9 subs, 2 invoices, 1 customer, 1 failed, 60
    assert not set(second["Event"]) & set(first["Event"])

    at.selectbox(key="events_status").set_value("failed").run()
    rows = at.dataframe[0].value
    assert list(rows["Status"]) == ["failed"]
    assert "1 matching event ·" in texts(at)

    at.selectbox(key="events_status").set_value("All")
    at.selectbox(key="events_type").set_value("invoice.payment_failed").run()
    assert list(at.dataframe[0].value["Type"]) == ["invoice.payment_failed"] * 2

    at.selectbox(key="events_range").set_value("Last hour").run()
    assert len(at.dataframe[0].value) == 2
    assert at.get("download_button")


def test_events_page_time_range_excludes_older_events(dashboard):
    feed(
        dashboard,
        "product.created",
        sf.product("prod_old", "Old"),
        at=datetime.now(UTC) - timedelta(days=3),
    )
    feed(dashboard, "product.created", sf.product("prod_new", "New"))
    at = signed_in("fiona").switch_page("pages/events.py").run()  # last 24 hours
    assert len(at.dataframe[0].value) == 1
    at.selectbox(key="events_range").set_value("Last 7 days").run()
    assert len(at.dataframe[0].value) == 2


# --- admin actions ---------------------------------------------------------------------


def test_admin_replays_a_failed_event_once_the_bug_is_fixed(dashboard, monkeypatch):
    def buggy(conn, event, received_at):
        raise RuntimeError("a bug in our product handler")

    # The event fails under a buggy handler, then the fix is "deployed" and the admin replays.
    with monkeypatch.context() as patch:
        patch.setitem(handlers.HANDLERS, "product.created", buggy)
        feed(dashboard, "product.created", sf.product("prod_x", "X"), event_id="evt_bug")
    at = signed_in("ada").switch_page("pages/webhooks.py").run()
    assert "a bug in our product handler" in at.dataframe[-1].value["Error"][0]
    assert at.selectbox(key="failed_event").value == "evt_bug"

    next(b for b in at.button if b.label == "Replay").click().run()
    assert not at.exception
    assert shown(at.success[0].value) == "Replayed evt_bug: processed (kept payload)."
    assert "No failed events" in texts(at)
    assert metrics(at)["Webhook health"] == "Healthy"


def test_admin_replay_of_a_still_broken_event_says_why_and_dismiss_settles_it(dashboard):
    populate(dashboard)
    at = signed_in("ada").switch_page("pages/webhooks.py").run()
    next(b for b in at.button if b.label == "Replay").click().run()
    assert not at.exception
    assert shown(at.error[0].value).startswith("Could not replay evt_broken: failed again")
    assert "status" in at.error[0].value
    assert metrics(at)["Webhook health"] == "Error"

    next(b for b in at.button if b.label == "Dismiss").click().run()
    assert not at.exception
    assert shown(at.success[0].value).startswith("Dismissed evt_broken")
    _, status = api_numbers(dashboard)
    assert status.unresolved_failed_events == 0
    assert metrics(at)["Webhook health"] == status.webhook_health.value.capitalize()


# --- configuration and outages ---------------------------------------------------------


def test_missing_cookie_key_is_a_message_not_a_traceback(dashboard, monkeypatch):
    monkeypatch.delenv("DASHBOARD_COOKIE_KEY")
    forget()
    at = app().run()
    assert not at.exception
    assert "DASHBOARD_COOKIE_KEY is not set" in shown(at.error[0].value)
    assert not at.text_input and not at.metric


def test_placeholder_cookie_key_is_refused(dashboard, monkeypatch):
    monkeypatch.setenv("DASHBOARD_COOKIE_KEY", "changeme")
    forget()
    at = app().run()
    assert not at.exception
    assert "DASHBOARD_COOKIE_KEY" in shown(at.error[0].value)
    assert not at.text_input


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_unreachable_database_is_a_message_not_a_traceback(dashboard, monkeypatch):
    monkeypatch.setenv(
        "DATABASE_URL", f"postgresql+psycopg://finance:hunter2@127.0.0.1:{free_port()}/finance"
    )
    forget()
    at = app().run()
    assert not at.exception
    assert "cannot be read right now" in at.error[0].value
    assert "hunter2" not in at.error[0].value
    assert not at.text_input and not at.metric


# --- OpenID Connect --------------------------------------------------------------------


def just_now() -> int:
    """An ID token's issue time (`iat`) for a sign-in that happened just now."""
    return int(datetime.now(UTC).timestamp())


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_oidc_maps_emails_to_roles(dashboard):
    populate(dashboard)
    at = app()
    at.secrets = OIDC_SECRETS
    alice = {"email": "alice@example.com", "name": "Alice", "iat": just_now()}
    at.user = {"is_logged_in": True, **alice}
    at.run()
    assert not at.exception
    assert list(metrics(at)) == METRICS

    at = app()
    at.secrets = OIDC_SECRETS
    at.user = {"is_logged_in": True, "email": "mallory@example.com", "iat": just_now()}
    at.run()
    assert [title.value for title in at.title] == ["No access"]
    assert not at.metric


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_oidc_signed_out_offers_the_provider_not_the_password_form(dashboard):
    at = app()
    at.secrets = OIDC_SECRETS
    at.user = {"is_logged_in": False}
    at.run()
    assert not at.exception
    assert not at.text_input and not at.metric
    labels = [b.label for b in at.button]
    assert labels == ["Sign in with your company account"] or "Authlib" in at.error[0].value
