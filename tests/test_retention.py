"""Event retention: what is pruned, what stays, and that no number the product shows moves."""

import itertools
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, func, insert, select, text

from finance_core.feed.housekeeping import LEASE, housekeeping
from finance_core.feed.ingest import StripeEvent, dismiss_event, ingest_event, recover_event
from finance_core.feed.retention import prune_events
from finance_core.store import leases, migrate
from finance_core.store.db import make_engine, read_transaction, write_transaction
from finance_core.store.models import subscription_counts, subscription_history, webhook_events
from finance_core.views.queries import stripe_sync_status, subscription_summary
from tests.conftest import make_settings
from tests.support import stripe_factory as sf
from tests.support.postgres import free_port
from tests.support.servers import start_listener, wait_healthy

NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=100)
ACTIVE = ["active", "trialing", "past_due"]
_created = itertools.count(1_790_000_000)


def feed(engine, event_type, obj, *, at, event_id=None, delivery=True):
    event = StripeEvent.from_payload(
        sf.event(event_type, obj, event_id=event_id, created=next(_created))
    )
    if not delivery:  # as sync recovers an event Stripe could not deliver
        return recover_event(engine=engine, event=event, now=at)
    return ingest_event(engine=engine, event=event, received_at=at)


def fill(engine, *, at):
    """Every kind of event, a second apart from `at`: 10 processed (one recovered by sync, not
    a webhook), 1 ignored, 1 failed, 1 dismissed; the latest delivery a processed price."""
    moments = (at + timedelta(seconds=n) for n in itertools.count())
    broken = sf.subscription("sub_broken", "active", "prod_pro")
    del broken["status"]
    feed(engine, "customer.subscription.updated", broken, at=next(moments), event_id="evt_failed")
    feed(engine, "customer.subscription.updated", broken, at=next(moments), event_id="evt_gone")
    dismiss_event(engine=engine, event_id="evt_gone", actor="admin", now=at)
    feed(engine, "product.updated", sf.product("prod_pro", "Pro"), at=next(moments), delivery=False)
    feed(engine, "product.created", sf.product("prod_pro", "Pro"), at=next(moments))
    for n in range(6):
        sub = sf.subscription(f"sub_{n}", "active" if n % 3 else "canceled", "prod_pro")
        feed(engine, "customer.subscription.created", sub, at=next(moments))
    failing = sf.invoice("in_1", "open", subscription_id="sub_1")
    feed(engine, "invoice.payment_failed", failing, at=next(moments))
    feed(engine, "customer.created", {"id": "cus_1", "object": "customer"}, at=next(moments))
    return feed(engine, "price.created", sf.price("price_1", "prod_pro"), at=next(moments))


def statuses(engine):
    with read_transaction(engine) as conn:
        rows = conn.execute(
            select(webhook_events.c.status, func.count()).group_by(webhook_events.c.status)
        )
        return {status: n for status, n in rows}


def everything_shown(engine):
    """Every field the API and the dashboard show, the counts and the whole history."""
    with read_transaction(engine) as conn:
        summary = subscription_summary(conn=conn, active_statuses=ACTIVE, now=NOW)
        status = stripe_sync_status(conn=conn, delayed_after=600, now=NOW)
        counts = sorted(tuple(row) for row in conn.execute(select(subscription_counts)))
        history = sorted(tuple(row) for row in conn.execute(select(subscription_history)))
    return summary, status, counts, history


def test_pruning_every_old_event_changes_no_number_and_keeps_the_last_webhook(engine):
    latest = fill(engine, at=OLD).event_id
    before = everything_shown(engine)
    assert before[1].last_event.id == latest and before[1].failed_payments_count == 1

    report = prune_events(engine=engine, retention_days=90, now=NOW, batch_size=3, pause_s=0)

    # Every processed event but the latest delivery's, the customer event, the dismissed one.
    assert report.removed == {"processed": 9, "ignored": 1, "dismissed": 1}
    assert report.finished and not report.dry_run
    assert statuses(engine) == {"processed": 1, "failed": 1}
    assert everything_shown(engine) == before
    summary, status, _, _ = before
    assert status.webhook_health == "error" and status.unresolved_failed_events == 1
    assert summary.active_subscriptions == 4


def test_recent_events_and_failed_ones_stay(engine):
    fill(engine, at=NOW - timedelta(days=89))
    report = prune_events(engine=engine, retention_days=90, now=NOW, pause_s=0)
    assert report.total == 0
    assert statuses(engine) == {"processed": 10, "ignored": 1, "failed": 1, "dismissed": 1}

    report = prune_events(engine=engine, retention_days=35, now=NOW, pause_s=0)
    assert report.removed == {"processed": 9, "ignored": 1, "dismissed": 1}
    assert statuses(engine)["failed"] == 1


def test_a_status_this_code_does_not_know_stays(engine):
    """A thin event's `pending` (another release's) is not in the list, so it is kept."""
    with write_transaction(engine) as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA ignore_check_constraints = ON")
        else:
            conn.execute(
                text("ALTER TABLE webhook_events DROP CONSTRAINT ck_webhook_events_status")
            )
        conn.execute(
            insert(webhook_events).values(
                id="evt_thin",
                type="v1.customer.subscription.updated",
                created=1,
                livemode=False,
                status="pending",
                attempts=0,
                deliveries=1,
                first_received_at=OLD,
                last_received_at=OLD,
            )
        )
    feed(engine, "product.created", sf.product("prod_1", "One"), at=OLD)
    feed(engine, "product.created", sf.product("prod_2", "Two"), at=OLD)
    prune_events(engine=engine, retention_days=90, now=NOW, pause_s=0)
    assert statuses(engine) == {"pending": 1, "processed": 1}


def test_a_dry_run_counts_and_deletes_nothing(engine):
    fill(engine, at=OLD)
    before = statuses(engine)
    report = prune_events(engine=engine, retention_days=90, now=NOW, dry_run=True)
    assert report.dry_run and report.removed == {"processed": 9, "ignored": 1, "dismissed": 1}
    assert report.line().startswith("would remove 9 processed, 1 ignored, 1 dismissed events")
    assert statuses(engine) == before


def test_a_stopped_prune_says_so_and_keeps_what_it_did(engine):
    fill(engine, at=OLD)
    stop = threading.Event()
    stop.set()
    report = prune_events(engine=engine, retention_days=90, now=NOW, stop=stop)
    assert not report.finished and report.total == 0
    assert "stopped before the end" in report.line()


def test_batch_size_is_bounded(engine):
    with pytest.raises(ValueError, match="batch size"):
        prune_events(engine=engine, retention_days=90, now=NOW, batch_size=0)


def test_housekeeping_prunes_only_while_it_holds_the_lease(engine, database_url):
    fill(engine, at=OLD)
    settings = make_settings(database_url)
    assert leases.acquire(
        engine=engine, name=LEASE, holder="another-listener", ttl=timedelta(hours=2), now=NOW
    )

    def one_turn():
        """The job until it finished its first turn, pruned or not."""
        stop, turned = threading.Event(), threading.Event()
        job = threading.Thread(
            target=housekeeping,
            kwargs={"engine": engine, "settings": settings, "stop": stop, "round_done": turned.set},
        )
        job.start()
        assert turned.wait(timeout=60)
        stop.set()
        job.join(timeout=30)
        assert not job.is_alive()

    one_turn()
    assert statuses(engine)["processed"] == 10  # the other listener's turn

    leases.release(engine=engine, name=LEASE, holder="another-listener")
    one_turn()
    assert statuses(engine) == {"processed": 1, "failed": 1}
    # Released on the way out: another listener may take over at once.
    assert leases.acquire(
        engine=engine, name=LEASE, holder="another-listener", ttl=timedelta(hours=2), now=NOW
    )


@pytest.mark.slow
def test_the_listeners_housekeeping_prunes_in_its_background_worker(engine, database_url):
    fill(engine, at=NOW - timedelta(days=40))
    feed(engine, "product.created", sf.product("prod_new", "New"), at=NOW)
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "STRIPE_WEBHOOK_SECRET": sf.SECRET,
        "EVENT_RETENTION_DAYS": "35",
    }
    process = start_listener(env, port, "--jobs", "housekeeping")
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process)
        deadline = time.monotonic() + 60
        while statuses(engine) != {"processed": 1, "failed": 1} and time.monotonic() < deadline:
            time.sleep(0.2)
        assert statuses(engine) == {"processed": 1, "failed": 1}
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=60)
    assert "Traceback" not in stderr


def prune_cli(database_url, *args, **env):
    return subprocess.run(
        [sys.executable, "-m", "finance_core", "prune", *args],
        env={**os.environ, "DATABASE_URL": database_url, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_prune_on_demand_and_its_dry_run_as_processes(engine, database_url):
    fill(engine, at=OLD)
    before = statuses(engine)
    dry = prune_cli(database_url, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would remove 9 processed, 1 ignored, 1 dismissed events first received" in dry.stdout
    assert "(EVENT_RETENTION_DAYS=90)" in dry.stdout
    assert statuses(engine) == before

    done = prune_cli(database_url)
    assert done.returncode == 0, done.stderr
    assert "removed 9 processed, 1 ignored, 1 dismissed events" in done.stdout
    assert "failed events stay" in done.stdout
    assert statuses(engine) == {"processed": 1, "failed": 1}


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_retention_below_35_days_is_refused_and_nothing_is_pruned(engine, database_url):
    fill(engine, at=OLD)
    before = statuses(engine)
    refused = prune_cli(database_url, EVENT_RETENTION_DAYS="10")
    assert refused.returncode == 2
    assert "EVENT_RETENTION_DAYS must be at least 35" in refused.stderr
    assert "Stripe retries a delivery for up to 3 days" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert statuses(engine) == before


def test_sqlite_prune_reads_the_status_index(tmp_path):
    """Each batch and the dry run's count find old events through (status, first_received_at),
    and the latest delivery through last_received_at: never a scan of the whole log."""
    engine = make_engine(f"sqlite:///{tmp_path}/plans.db")
    migrate.upgrade(engine)
    executed = []

    @event.listens_for(engine, "before_cursor_execute")
    def _capture(conn, cursor, statement, parameters, context, executemany):
        if "webhook_events" in statement and not statement.startswith("EXPLAIN"):
            executed.append((statement, parameters))

    prune_events(engine=engine, retention_days=90, now=NOW, dry_run=True)
    prune_events(engine=engine, retention_days=90, now=NOW)
    assert len(executed) == 6  # a count and a batch per status
    with engine.connect() as conn:
        for statement, parameters in executed:
            details = [
                str(row[-1])
                for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            ]
            assert any("ix_webhook_events_status_received" in d for d in details), details
            scans = [d for d in details if d.startswith("SCAN") and "INDEX" not in d]
            assert not scans, (statement, details)
    engine.dispose()


def test_the_report_in_words():
    from finance_core.feed.retention import PruneReport

    report = PruneReport(
        datetime(2026, 9, 1, tzinfo=UTC),
        {"processed": 1200, "ignored": 3, "dismissed": 0},
        False,
        True,
    )
    assert report.line() == (
        "removed 1,200 processed, 3 ignored, 0 dismissed events first received before "
        "2026-09-01 00:00:00 UTC"
    )
    assert replace(report, dry_run=True).line().startswith("would remove")
