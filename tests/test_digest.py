"""The morning digest on a real store: when it is due, claimed once a day, what it says, sent
through Apprise to a real HTTP receiver; Send digest now. Time moves through injected clocks.
Listener processes running the digest job are in `test_digest_listener.py`."""

import threading
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from alembic import command
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from finance_core.access.audit import AuditFilter, audit_page
from finance_core.alerts import sending, store
from finance_core.alerts.digest_job import claim_digest, due_day, send_digest_now
from finance_core.settings import SettingsError
from finance_core.store import migrate
from finance_core.store.db import read_transaction, write_transaction
from finance_core.store.models import alerts
from tests.conftest import make_settings
from tests.support import stripe_factory as sf
from tests.support.alerts import (
    API_KEY,
    CUSTOMER_DATA,
    DASHBOARD,
    HOOK_PASSWORD,
    HOOK_PATH_TOKEN,
    METRICS_TOKEN,
    assert_nothing_secret,
    stored_texts,
)
from tests.support.digest import feed, fill
from tests.support.receivers import json_receiver

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize(
    ("local_now", "last_sent", "due"),
    [
        ("2026-12-04 07:59", None, None),  # not yet
        ("2026-12-04 08:00", None, "2026-12-04"),
        ("2026-12-04 08:00", "2026-12-03", "2026-12-04"),
        ("2026-12-04 23:30", "2026-12-03", "2026-12-04"),  # missed: sent later that day
        ("2026-12-04 09:00", "2026-12-04", None),  # sent already (a restart, another listener)
        ("2026-12-05 07:00", "2026-12-03", None),  # the 4th's was missed: not sent on the 5th
        ("2026-03-29 08:00", "2026-03-28", "2026-03-29"),  # the day clocks go forward
    ],
)
def test_a_digest_is_due_once_its_local_time_has_passed_that_day(local_now, last_sent, due):
    now = datetime.fromisoformat(local_now).replace(tzinfo=BERLIN).astimezone(UTC)
    found = due_day(at=time(8, 0), zone=BERLIN, last_sent=last_sent, now=now)
    assert (found.isoformat() if found else None) == due


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("8 am Europe/Berlin", "DIGEST_AT must be a time HH:MM and an IANA time zone"),
        ("08:00", "DIGEST_AT must be a time HH:MM and an IANA time zone"),
        ("08:00 Europe/Atlantis", "DIGEST_AT names an unknown time zone 'Europe/Atlantis'"),
    ],
)
def test_a_bad_digest_time_is_refused_naming_the_variable(value, message):
    with pytest.raises(SettingsError, match=message):
        make_settings("sqlite://", digest_at=value)


def digest_settings(database_url, hook, **overrides):
    url = hook.url(path=f"hooks/{HOOK_PATH_TOKEN}", credentials=f"finance:{HOOK_PASSWORD}")
    values = {
        "digest_at": "08:00 Europe/Berlin",
        "digest_urls": url,
        "stripe_api_key": API_KEY,
        "metrics_token": METRICS_TOKEN,
        "dashboard_url": DASHBOARD,
        **overrides,
    }
    return make_settings(database_url, **values)


def test_processes_claiming_at_once_keep_and_send_one_digest_a_day(engine, database_url):
    now = datetime.now(UTC)
    fill(engine, now)
    local = now.astimezone(BERLIN)
    # DIGEST_AT a minute before now, unless that is yesterday (just after midnight): midnight.
    at = max(local - timedelta(minutes=1), local.replace(hour=0, minute=0))
    with json_receiver() as hook:
        settings = digest_settings(database_url, hook, digest_at=f"{at:%H:%M} Europe/Berlin")
        claimed: list[store.AlertRecord | None] = []

        def process() -> None:
            claimed.append(claim_digest(engine=engine, settings=settings, now=now))

        threads = [threading.Thread(target=process) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        (digest,) = [alert for alert in claimed if alert is not None]
        status = sending.deliver(
            engine=engine, alert=digest, urls=settings.digest_channels(), stop=threading.Event()
        )
        assert status == "sent"
        (message,) = hook.wait_for(1)
        # Later the same day, a restarted process: nothing more.
        assert (
            claim_digest(engine=engine, settings=settings, now=now + timedelta(minutes=5)) is None
        )
    assert (digest.rule, digest.kind, digest.state) == ("digest", "digest", f"{local:%Y-%m-%d}")
    assert message.startswith(f"PenguinMails Finance: morning digest for {local:%Y-%m-%d}\n")
    assert "Active subscriptions: 5 (+5 since yesterday), by plan:" in message
    assert "- Pro: 3 (+3 since yesterday)" in message
    assert "- Starter: 2 (+2 since yesterday)" in message
    yesterday = (now - timedelta(days=1)).date()
    assert f"Yesterday ({yesterday}, UTC): 0 new subscriptions, 0 canceled." in message
    assert (
        "Failed payments: 2 invoices failing (no figure for yesterday to compare with)." in message
    )
    assert "- EUR: 1 invoice, 49.00 EUR due" in message
    assert "- USD: 1 invoice, 29.00 USD due" in message
    assert "Feed: webhook health is healthy" in message
    assert "Waiting for action: nothing." in message
    assert f"Dashboard: {DASHBOARD}/home" in message
    assert_nothing_secret(message, stored_texts(engine))
    for personal in [*CUSTOMER_DATA, "cus_suite0001"]:
        assert personal not in message


def test_failed_payments_are_compared_with_the_previous_days_digest(engine, database_url):
    day_one = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    fill(engine, day_one)
    with json_receiver() as hook:
        settings = digest_settings(database_url, hook, digest_urls="", alert_urls="")
        first = claim_digest(engine=engine, settings=settings, now=day_one)
        assert first is not None and first.status == "unsent"  # no channel: kept, not sent
        feed(
            engine,
            "invoice.payment_failed",
            sf.invoice("in_d3", "open", subscription_id="sub_d2", amount_due=1000),
            day_one,
        )
        second = claim_digest(engine=engine, settings=settings, now=day_one + timedelta(days=1))
    assert second is not None
    assert "Failed payments: 3 invoices failing (+1 since yesterday)." in second.body
    assert (
        "- USD: 2 invoices, 39.00 USD due (+1 invoices, +10.00 USD since yesterday)" in second.body
    )
    assert "- EUR: 1 invoice, 49.00 EUR due (+0 invoices, +0.00 EUR since yesterday)" in second.body


def test_the_digest_says_what_was_recovered_yesterday_and_the_months_rate(engine, database_url):
    day_one = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    fill(engine, day_one)  # in_d1 (usd) and in_d2 (eur) start failing on day one
    paid = sf.invoice("in_d1", "paid", subscription_id="sub_d0")
    feed(engine, "invoice.paid", paid, day_one + timedelta(hours=6))
    voided = sf.invoice("in_d2", "void", subscription_id="sub_d1", amount_due=4900)
    voided["currency"] = "eur"
    feed(engine, "invoice.voided", voided, day_one + timedelta(hours=7))
    with json_receiver() as hook:
        settings = digest_settings(database_url, hook, digest_urls="", alert_urls="")
        digest = claim_digest(engine=engine, settings=settings, now=day_one + timedelta(days=1))
    assert digest is not None
    # Paid on day one, which is yesterday for the next day's digest; one of two closed by payment.
    assert "Recovered yesterday: 1 invoice, 29.00 USD." in digest.body, digest.body
    assert "have been closed, 50% were paid." in digest.body


def test_send_digest_now_is_sent_kept_and_audited(engine, database_url):
    now = datetime.now(UTC)
    fill(engine, now)
    with json_receiver() as hook:
        settings = digest_settings(database_url, hook)
        digest = send_digest_now(engine=engine, settings=settings, actor="admin", now=now)
        (message,) = hook.wait_for(1)
    assert digest.status == "sent" and digest.triggered_by == "admin"
    assert [d.outcome for d in digest.deliveries] == ["sent"]
    assert message == f"{digest.title}\n{digest.body}"
    with read_transaction(engine) as conn:
        (entry,) = audit_page(conn=conn, filters=AuditFilter(action="digest_sent"), limit=5).rows
    assert (entry.actor, entry.target, entry.detail) == (
        "admin",
        f"alert {digest.id}",
        "to 1 channel",
    )
    # The daily digest is still due at DIGEST_AT.
    at_eight = now.astimezone(BERLIN).replace(hour=8, minute=0) + timedelta(days=1)
    assert claim_digest(engine=engine, settings=settings, now=at_eight) is not None


def test_the_digest_migration_goes_down_and_up_again(engine, database_url):
    with json_receiver() as hook:
        settings = digest_settings(database_url, hook, digest_urls="", alert_urls="")
        after_eight = datetime.now(BERLIN).replace(hour=9, minute=0).astimezone(UTC)
        assert claim_digest(engine=engine, settings=settings, now=after_eight) is not None
    config = migrate._config()
    with engine.connect() as conn, conn.begin():
        config.attributes["connection"] = conn
        command.downgrade(config, "0009_history_retention")
    with read_transaction(engine) as conn:  # the digests went with it; the rest stayed
        assert conn.execute(select(func.count()).select_from(alerts)).scalar_one() == 0
    with pytest.raises(IntegrityError), write_transaction(engine) as conn:
        store.add_alert(
            conn=conn,
            rule="digest",
            kind="digest",
            state="x",
            title="t",
            body="b",
            now=datetime.now(UTC),
            hold=None,
        )
    migrate.upgrade(engine)
    assert migrate.is_current(engine)
