"""`sync`, `replay` and `demo` as real processes, on both databases (SPEC section 2)."""

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, update

from finance_core.access import audit
from finance_core.feed import handlers
from finance_core.feed.ingest import StripeEvent, ingest_event
from finance_core.store.db import read_transaction
from finance_core.store.models import webhook_events
from finance_core.views import queries
from tests.support import stripe_factory as sf
from tests.support.reads import latest_event
from tests.support.stripe_api import API_KEY

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(engine, database_url, stripe_api) -> Cli:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STRIPE_", "DATABASE_URL", "DASHBOARD_"))
    }
    base |= {"DATABASE_URL": database_url, "STRIPE_API_BASE": stripe_api.url}

    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "finance_core", *args],
            env={**base, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run


def feed(engine, event_type, obj, **kwargs) -> dict:
    event = sf.event(event_type, obj, **kwargs)
    ingest_event(
        engine=engine,
        event=StripeEvent.from_payload(event),
        received_at=datetime.now(UTC),
        raw_payload=json.dumps(event),
    )
    return event


def fail_under_a_bug(engine, event_type, obj, event_id) -> None:
    """The event fails under a buggy handler in this process; the CLI runs the fixed code."""

    def buggy(conn, event, received_at):
        raise RuntimeError("a bug in our handler")

    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(handlers.HANDLERS, event_type, buggy)
        feed(engine, event_type, obj, event_id=event_id)


def event_status(engine, event_id) -> str:
    with engine.connect() as conn:
        return conn.execute(
            select(webhook_events.c.status).where(webhook_events.c.id == event_id)
        ).scalar_one()


# --- sync -------------------------------------------------------------------------------


@pytest.mark.slow
def test_sync_reports_what_it_changed_and_never_prints_the_key(cli, engine, stripe_api):
    stripe_api.put("products", sf.product("prod_cli", "CLI plan"))
    stripe_api.put("subscriptions", sf.subscription("sub_cli", "active", "prod_cli"))

    run = cli("sync", STRIPE_API_KEY=API_KEY)

    assert run.returncode == 0, run.stderr
    assert "products: 1 fetched, 1 new" in run.stdout
    assert "subscriptions: 1 fetched, 1 new" in run.stdout
    assert "done in" in run.stdout and "2 changes, 0 failures" in run.stdout
    assert API_KEY not in run.stdout + run.stderr
    with read_transaction(engine) as conn:
        summary = queries.subscription_summary(
            conn=conn, active_statuses=["active"], now=datetime.now(UTC)
        )
    assert [(p.plan_name, p.count) for p in summary.plan_distribution] == [("CLI plan", 1)]

    again = cli("sync", STRIPE_API_KEY=API_KEY)
    assert "subscriptions: 1 fetched, 0 new, 0 updated, 1 unchanged" in again.stdout
    runs = list(audit.entries(engine=engine, filters=audit.AuditFilter(action="sync_run")))
    assert [(entry.actor, entry.target) for entry in runs] == [
        (audit.cli_actor(), "sync run 2"),
        (audit.cli_actor(), "sync run 1"),
    ]


@pytest.mark.slow
def test_sync_without_a_key_names_the_variable(cli):
    run = cli("sync")
    assert run.returncode == 2
    assert "STRIPE_API_KEY is not set" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.slow
def test_sync_with_a_refused_key_says_so_and_changes_nothing(cli, engine, stripe_api):
    stripe_api.put("products", sf.product("prod_cli", "CLI plan"))
    run = cli("sync", STRIPE_API_KEY="rk_test_revoked_key_0000000000")
    assert run.returncode == 2
    assert "Stripe refused STRIPE_API_KEY (401)" in run.stderr
    assert "rk_test_revoked" not in run.stdout + run.stderr
    with read_transaction(engine) as conn:
        assert queries.status_breakdown(conn=conn) == {}


@pytest.mark.slow
def test_sync_with_a_malformed_object_exits_1_after_applying_the_rest(cli, stripe_api):
    stripe_api.put("subscriptions", sf.subscription("sub_ok", "active", "prod_cli"))
    broken = sf.subscription("sub_broken", "active", "prod_cli")
    del broken["status"]
    stripe_api.put("subscriptions", broken)
    run = cli("sync", STRIPE_API_KEY=API_KEY)
    assert run.returncode == 1
    assert "subscriptions: 2 fetched, 1 new" in run.stdout
    assert "error: subscription 'sub_broken'" in run.stdout


# --- replay -----------------------------------------------------------------------------


@pytest.mark.slow
def test_replay_without_ids_reprocesses_every_failed_event(cli, engine):
    fail_under_a_bug(engine, "product.created", sf.product("prod_a", "A"), "evt_bug_a")
    fail_under_a_bug(engine, "product.updated", sf.product("prod_b", "B"), "evt_bug_b")
    broken = sf.subscription("sub_broken", "active", "prod_a")
    del broken["items"]
    feed(engine, "customer.subscription.updated", broken, event_id="evt_broken")

    run = cli("replay")

    assert run.returncode == 1  # one of three still fails
    assert "evt_bug_a: processed (kept payload)" in run.stdout
    assert "evt_bug_b: processed (kept payload)" in run.stdout
    assert "evt_broken: failed again: MalformedObject" in run.stdout
    assert "replayed 2 of 3" in run.stdout
    assert [event_status(engine, e) for e in ("evt_bug_a", "evt_bug_b", "evt_broken")] == [
        "processed",
        "processed",
        "failed",
    ]
    with read_transaction(engine) as conn:
        names = {row[0] for row in conn.exec_driver_sql("SELECT name FROM products")}
        assert names == {"A", "B"}
        assert latest_event(conn).id == "evt_broken"  # a replay is no delivery


@pytest.mark.slow
def test_replay_of_named_events_and_the_refusals(cli, engine):
    fail_under_a_bug(engine, "product.created", sf.product("prod_a", "A"), "evt_bug_a")
    feed(engine, "product.created", sf.product("prod_ok", "Ok"), event_id="evt_fine")

    run = cli("replay", "evt_bug_a", "evt_fine", "evt_unknown")

    assert run.returncode == 1
    assert "evt_bug_a: processed" in run.stdout
    assert "evt_fine: event 'evt_fine' is processed, not failed" in run.stdout
    assert "evt_unknown: no event 'evt_unknown' in the store" in run.stdout
    assert cli("replay").stdout.strip() == "no failed events to replay"
    assert cli("replay").returncode == 0


@pytest.mark.slow
def test_replay_refetches_from_stripe_when_no_payload_is_kept(cli, engine, stripe_api):
    fail_under_a_bug(engine, "product.created", sf.product("prod_a", "A"), "evt_bug_a")
    fail_under_a_bug(engine, "product.created", sf.product("prod_b", "B"), "evt_gone")
    with engine.begin() as conn:  # payloads purged (they may hold personal data)
        conn.execute(update(webhook_events).values(payload=None))
    stripe_api.put(
        "events", sf.event("product.created", sf.product("prod_a", "A"), event_id="evt_bug_a")
    )

    without_key = cli("replay", "evt_bug_a")
    assert "has no kept payload; re-fetch it from Stripe" in without_key.stdout

    run = cli("replay", STRIPE_API_KEY=API_KEY)
    assert "evt_bug_a: processed (payload re-fetched from Stripe)" in run.stdout
    assert "evt_gone: no kept payload, and Stripe no longer has it" in run.stdout
    assert event_status(engine, "evt_bug_a") == "processed"
    assert event_status(engine, "evt_gone") == "failed"


# --- demo -------------------------------------------------------------------------------


@pytest.mark.slow
def test_demo_fills_an_empty_store_through_the_ingest_path(cli, engine):
    run = cli("demo", "--subscriptions", "40")
    assert run.returncode == 0, run.stderr
    assert "demo events:" in run.stdout and "0 failed" in run.stdout
    with read_transaction(engine) as conn:
        now = datetime.now(UTC)
        summary = queries.subscription_summary(
            conn=conn, active_statuses=["active", "trialing", "past_due"], now=now
        )
        status = queries.stripe_sync_status(conn=conn, delayed_after=600, now=now)
        breakdown = queries.status_breakdown(conn=conn)
    assert sum(breakdown.values()) == 40
    assert 0 < summary.active_subscriptions < 40
    assert {p.plan_name for p in summary.plan_distribution} <= {
        "Starter",
        "Pro",
        "Business",
        "Enterprise",
    }
    assert status.webhook_health == "healthy" and not summary.livemode
    # Running it again on its own demo store is fine: the events are already there.
    assert cli("demo", "--subscriptions", "40").returncode == 0


@pytest.mark.slow
def test_demo_refuses_a_store_holding_real_data(cli, engine):
    feed(engine, "product.created", sf.product("prod_real", "Real"), event_id="evt_real_1")
    run = cli("demo")
    assert run.returncode == 2
    assert "already holds data that is not demo data" in run.stderr
    with read_transaction(engine) as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM webhook_events").scalar() == 1


@pytest.mark.slow
def test_demo_refuses_a_store_filled_by_sync(cli, engine, stripe_api):
    stripe_api.put("products", sf.product("prod_real", "Real"))
    assert cli("sync", STRIPE_API_KEY=API_KEY).returncode == 0
    run = cli("demo")
    assert run.returncode == 2 and "not demo data" in run.stderr
