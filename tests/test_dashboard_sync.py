"""The admins' Stripe sync page and the Replay button, through AppTest, against the stand-in.

The dashboard process talks to the local Stripe API stand-in over real HTTP with the real
`stripe` library; the store is then read through the queries the API and pages share.
"""

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, update
from streamlit.testing.v1 import AppTest

from dashboard.auth import VIEWER_KEY, Viewer
from dashboard.sync_job import SyncJobs
from finance_core.access import audit
from finance_core.feed import handlers
from finance_core.feed.ingest import StripeEvent, ingest_event
from finance_core.feed.sync import SyncReport
from finance_core.settings import get_settings
from finance_core.store.db import read_transaction
from finance_core.store.models import webhook_events
from finance_core.views import queries
from tests.support import apptest
from tests.support import stripe_factory as sf
from tests.support.apptest import APP, metrics, shown, signed_in, texts
from tests.support.stripe_api import API_KEY, StripeStandIn, running_stand_in

ACTIVE = ["active", "trialing", "past_due"]
SYNC_PAGE = "pages/sync.py"

dashboard = apptest.dashboard  # the fixture: the test store, its users, no cache left over


@pytest.fixture
def stripe_api(dashboard, monkeypatch) -> Iterator[StripeStandIn]:
    """The stand-in, with the dashboard's STRIPE_API_KEY and STRIPE_API_BASE pointing at it."""
    with running_stand_in() as stand_in:
        use_stripe(monkeypatch, stand_in)
        yield stand_in


def use_stripe(monkeypatch, stand_in: StripeStandIn) -> None:
    monkeypatch.setenv("STRIPE_API_KEY", API_KEY)
    monkeypatch.setenv("STRIPE_API_BASE", stand_in.url)
    get_settings.cache_clear()  # as a restart after setting them would


def sync_page(username: str = "ada") -> AppTest:
    return signed_in(username).switch_page(SYNC_PAGE).run()


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def summary(engine) -> queries.SubscriptionSummary:
    with read_transaction(engine) as conn:
        return queries.subscription_summary(
            conn=conn, active_statuses=ACTIVE, now=datetime.now(UTC)
        )


def event_status(engine, event_id: str) -> str:
    with engine.connect() as conn:
        return conn.execute(
            select(webhook_events.c.status).where(webhook_events.c.id == event_id)
        ).scalar_one()


# --- who gets the page -----------------------------------------------------------------


def test_only_admins_get_the_stripe_sync_page(dashboard):
    fiona = signed_in("fiona")
    with pytest.raises(ValueError, match="navigation page"):
        fiona.switch_page(SYNC_PAGE)

    ada = sync_page("ada")
    assert not ada.exception
    assert [title.value for title in ada.title] == ["Stripe sync"]


def test_the_page_itself_refuses_a_finance_user(dashboard):
    """The second lock: run directly, the page shows a refusal and no button."""
    at = AppTest.from_file(APP.parent / SYNC_PAGE, default_timeout=60)
    at.session_state[VIEWER_KEY] = Viewer("fiona", "Fiona", ("finance",))
    at.run()
    assert not at.exception
    assert [error.value for error in at.error] == ["Only an admin can run a Stripe sync."]
    assert not at.button and not at.dataframe


# --- not configured --------------------------------------------------------------------


def test_without_a_key_the_page_says_what_to_set_and_the_button_is_disabled(dashboard):
    at = sync_page()
    assert not at.exception
    explanation = at.info[0].value
    assert "STRIPE_API_KEY" in explanation
    assert "read access to products, prices, subscriptions, invoices and events" in explanation
    assert button(at, "Sync now").disabled
    assert "No sync has run yet" in at.info[1].value
    assert not at.dataframe


# --- a sync from the page --------------------------------------------------------------


def test_sync_now_applies_stripe_and_every_page_shows_the_new_numbers(dashboard, stripe_api):
    for product_id, name in [("prod_pro", "Pro"), ("prod_team", "Team")]:
        stripe_api.put("products", sf.product(product_id, name))
    stripe_api.put("subscriptions", sf.subscription("sub_1", "active", "prod_pro"))
    stripe_api.put("subscriptions", sf.subscription("sub_2", "trialing", "prod_team"))
    stripe_api.put("subscriptions", sf.subscription("sub_3", "canceled", "prod_pro"))

    at = signed_in("ada")
    assert metrics(at)["Active subscriptions"] == "0"  # and now cached for a while

    at.switch_page(SYNC_PAGE).run()
    assert not button(at, "Sync now").disabled
    assert "Sync is not configured" not in texts(at)
    button(at, "Sync now").click().run()

    assert not at.exception
    [box] = at.status
    assert box.state == "complete" and box.label == "Sync finished"
    assert "subscriptions: 3 read" in "\n".join(shown(md.value) for md in box.markdown)
    assert at.success[0].value.startswith("Sync finished: 5 changes, 0 failures.")
    assert "subscriptions: 3 fetched, 3 new, 0 updated" in texts(at)
    synced = summary(dashboard)
    assert synced.active_subscriptions == 2
    assert sorted((p.plan_name, p.count) for p in synced.plan_distribution) == [
        ("Pro", 1),
        ("Team", 1),
    ]
    [run] = at.dataframe[0].value.to_dict("records")
    assert run["Status"] == "succeeded"
    assert run["Triggered by"] == "ada"
    [audited] = audit.entries(engine=dashboard, filters=audit.AuditFilter(action="sync_run"))
    assert (audited.actor, audited.target) == ("ada", "sync run 1")
    assert (run["Changes"], run["Failures"], run["Error"]) == (5, 0, "")
    assert run["Finished (UTC)"] >= run["Started (UTC)"]

    at.switch_page("pages/overview.py").run()
    assert metrics(at)["Active subscriptions"] == "2"


def test_a_refused_key_stops_the_sync_with_its_reason_and_a_failed_run(dashboard, stripe_api):
    stripe_api.put("products", sf.product("prod_pro", "Pro"))
    stripe_api.fail("/v1/products", 401, times=100)

    at = sync_page()
    button(at, "Sync now").click().run()

    assert not at.exception
    assert at.status[0].state == "error"
    assert "Stripe refused STRIPE_API_KEY (401): check the key" in shown(at.error[0].value)
    assert API_KEY not in texts(at)
    [run] = at.dataframe[0].value.to_dict("records")
    assert run["Status"] == "failed"
    assert "401" in run["Error"]
    with read_transaction(dashboard) as conn:
        assert queries.status_breakdown(conn=conn) == {}
    assert not button(at, "Sync now").disabled  # nothing left running: it can be tried again


def test_a_sync_with_a_malformed_object_warns_with_the_error(dashboard, stripe_api):
    stripe_api.put("subscriptions", sf.subscription("sub_ok", "active", "prod_pro"))
    broken = sf.subscription("sub_broken", "active", "prod_pro")
    del broken["status"]
    stripe_api.put("subscriptions", broken)

    at = sync_page()
    button(at, "Sync now").click().run()

    assert not at.exception and not at.success
    warning = shown(at.warning[0].value)
    assert "1 change, 1 failure" in warning and "subscription 'sub_broken'" in warning
    assert summary(dashboard).active_subscriptions == 1
    [run] = at.dataframe[0].value.to_dict("records")
    assert (run["Status"], run["Failures"]) == ("succeeded", 1)


# --- one run at a time, whatever the page does ----------------------------------------


def test_a_sync_job_runs_on_when_nobody_follows_it_and_only_one_runs_at_once():
    """Streamlit ends a page's run on any click elsewhere; the sync must not end with it."""
    jobs = SyncJobs()
    release = threading.Event()

    def work(progress):
        progress("products: 100 read")
        assert release.wait(10)
        progress("prices: 3 read")
        return SyncReport()

    first = jobs.start(work, triggered_by="dashboard:ada", now=datetime.now(UTC))
    second = jobs.start(work, triggered_by="dashboard:root", now=datetime.now(UTC))
    assert second is first and jobs.running() is first
    assert next(first.follow(every=5)) == ["products: 100 read"]  # then the page goes away

    release.set()
    # Whoever opens the page next follows the same run from its first line to its end.
    lines = [line for batch in first.follow(every=5) for line in batch]
    assert lines == ["products: 100 read", "prices: 3 read"]
    assert first.done and first.report == SyncReport() and first.error is None
    assert jobs.running() is None
    assert jobs.start(work, triggered_by="dashboard:root", now=datetime.now(UTC)) is not first


def test_a_bug_in_a_sync_job_ends_it_with_the_error_in_words(caplog):
    def work(progress):
        raise RuntimeError("a bug in the sync")

    job = SyncJobs().start(work, triggered_by="dashboard:ada", now=datetime.now(UTC))
    assert not any(job.follow(every=5))
    assert job.report is None and job.error == "RuntimeError: a bug in the sync"
    assert "Traceback" in caplog.text  # kept for whoever reads the dashboard's log


# --- the Replay button -----------------------------------------------------------------


def fail_without_payload(engine, event: dict) -> None:
    """The event failed under a bug since fixed, and its payload was purged since."""

    def buggy(conn, event, received_at):
        raise RuntimeError("a bug in our product handler")

    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(handlers.HANDLERS, event["type"], buggy)
        ingest_event(
            engine=engine,
            event=StripeEvent.from_payload(event),
            received_at=datetime.now(UTC),
            raw_payload=json.dumps(event),
        )
    with engine.begin() as conn:
        conn.execute(update(webhook_events).values(payload=None))


def test_replay_refetches_from_stripe_once_a_key_is_set(dashboard, monkeypatch):
    event = sf.event("product.created", sf.product("prod_x", "Extra"), event_id="evt_bug")
    fail_without_payload(dashboard, event)

    at = signed_in("ada").switch_page("pages/webhooks.py").run()
    assert "once STRIPE_API_KEY is set, re-fetches it from Stripe" in texts(at)
    button(at, "Replay").click().run()
    assert not at.exception
    assert shown(at.error[0].value) == (
        "Could not replay evt_bug: event 'evt_bug' has no kept payload; re-fetch it from Stripe"
    )
    assert event_status(dashboard, "evt_bug") == "failed"

    with running_stand_in() as stand_in:
        stand_in.put("events", event)
        use_stripe(monkeypatch, stand_in)
        at.run()
        assert "or re-fetches it from Stripe when none is kept" in texts(at)
        button(at, "Replay").click().run()
        assert stand_in.requests[-1][0] == "/v1/events/evt_bug"

    assert not at.exception
    replayed = "Replayed evt_bug: processed (payload re-fetched from Stripe)."
    assert shown(at.success[0].value) == replayed
    assert event_status(dashboard, "evt_bug") == "processed"
    assert "No failed events" in texts(at)
    assert metrics(at)["Webhook health"] == "Healthy"
