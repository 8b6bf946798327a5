"""Alert rules driven through time on a real store, sent to a real HTTP receiver and SMTP server.

Time moves through the rules' `now`; what is sent goes through Apprise over real sockets to
`tests/support/receivers.py`. The listener processes that run the same job are in
`test_alerts_listener.py`.
"""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from finance_core.alerts import channels, sending, store
from finance_core.alerts.job import CLAIM_HOLD, evaluate, send_test_alert
from finance_core.alerts.rules import FAILED_PAYMENTS_MEASURE
from finance_core.alerts.samples import FAILED_PAYMENTS_DAILY_MEASURE
from finance_core.feed.ingest import StripeEvent, dismiss_event, ingest_event
from finance_core.feed.rejections import record_rejection
from finance_core.store.db import make_engine, read_transaction, write_transaction
from finance_core.store.models import alert_samples
from tests.conftest import make_settings
from tests.support import stripe_factory as sf
from tests.support.alerts import (
    API_KEY,
    DASHBOARD,
    HOOK_PASSWORD,
    HOOK_PATH_TOKEN,
    METRICS_TOKEN,
    assert_nothing_secret,
    stored_texts,
)
from tests.support.receivers import json_receiver, smtp_receiver

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def receivers():
    with json_receiver() as hook, smtp_receiver() as mail:
        yield hook, mail


def alert_settings(database_url, hook, mail=None, **overrides):
    urls = [hook.url(path=f"hooks/{HOOK_PATH_TOKEN}", credentials=f"finance:{HOOK_PASSWORD}")]
    if mail is not None:
        urls.append(mail.url())
    return make_settings(
        database_url,
        alert_urls=",".join(urls),
        stripe_api_key=API_KEY,
        metrics_token=METRICS_TOKEN,
        dashboard_url=DASHBOARD,
        **overrides,
    )


def check(engine, settings, at, rule=None):
    """Evaluate at `at`, send what this process claimed; the alerts (of `rule`) as kept."""
    claimed = evaluate(engine=engine, settings=settings, now=at)
    for alert in claimed:
        sending.deliver(
            engine=engine, alert=alert, urls=settings.alert_channels(), stop=threading.Event()
        )
    with read_transaction(engine) as conn:
        kept = [store.get_alert(conn=conn, alert_id=alert.id) for alert in claimed]
    return [alert for alert in kept if rule is None or alert.rule == rule]


def feed(engine, event_type, obj, at, event_id=None):
    event = sf.event(event_type, obj, event_id=event_id, created=int(at.timestamp()))
    return ingest_event(engine=engine, event=StripeEvent.from_payload(event), received_at=at)


def changes(found):
    return [(alert.rule, alert.kind, alert.state) for alert in found]


@pytest.mark.slow
def test_health_alerts_once_on_leaving_healthy_and_once_on_coming_back(
    engine, database_url, receivers
):
    hook, mail = receivers
    settings = alert_settings(database_url, hook, mail)
    started = check(engine, settings, T0)  # an empty store: no webhook yet
    assert changes(started) == [("webhook_health", "started", "delayed")]
    assert started[0].status == "sent"
    assert "Webhook health is delayed: no webhook has been received yet" in started[0].body
    assert f"Dashboard: {DASHBOARD}/webhook-health" in started[0].body
    assert check(engine, settings, T0 + timedelta(minutes=1)) == []  # still delayed: no repeat

    feed(engine, "product.created", sf.product("prod_a", "A"), T0 + timedelta(minutes=2))
    (ended,) = check(engine, settings, T0 + timedelta(minutes=3))
    assert (ended.kind, ended.state) == ("ended", "healthy")
    assert ended.title == "PenguinMails Finance: Webhook health is healthy"
    assert "it was delayed from 2026-12-01 12:00:00 UTC, 3 minutes" in ended.body

    broken = sf.subscription("sub_broken", "active", "prod_a")
    del broken["status"]
    feed(engine, "customer.subscription.updated", broken, T0 + timedelta(minutes=4), "evt_bad")
    (error,) = check(engine, settings, T0 + timedelta(minutes=5))
    assert (error.kind, error.state) == ("started", "error")
    assert "1 event failed to apply" in error.body
    assert "replay" in error.body
    # Another process, or this one restarted, finds the state in the store: no repeat.
    restarted = make_engine(database_url)
    try:
        assert check(restarted, settings, T0 + timedelta(minutes=6)) == []
    finally:
        restarted.dispose()

    dismiss_event(engine=engine, event_id="evt_bad", actor="ada", now=T0)
    assert changes(check(engine, settings, T0 + timedelta(minutes=7))) == [
        ("webhook_health", "ended", "healthy")
    ]
    assert check(engine, settings, T0 + timedelta(minutes=8)) == []

    assert len(hook.messages()) == len(mail.wait_for(4)) == 4  # each change once, each channel
    assert "Webhook health is error" in hook.messages()[2]
    assert "Subject: PenguinMails Finance: Webhook health is delayed" in mail.mails[0]
    assert_nothing_secret(stored_texts(engine), *hook.messages(), *mail.mails)


def test_a_flood_of_rejections_names_the_commonest_reason_once_and_its_end(
    engine, database_url, receivers
):
    hook, _ = receivers
    settings = alert_settings(database_url, hook)
    feed(engine, "product.created", sf.product("prod_a", "A"), T0)  # health stays healthy
    for n in range(19):
        reason = "bad_signature" if n < 16 else "stale_timestamp"
        record_rejection(engine=engine, reason=reason, client_address="10.0.0.9", now=T0)
    assert check(engine, settings, T0 + timedelta(seconds=30)) == []  # 19: under 20

    record_rejection(engine=engine, reason="bad_signature", client_address=None, now=T0)
    (started,) = check(engine, settings, T0 + timedelta(minutes=1))
    assert (started.rule, started.kind, started.state) == ("rejections", "started", "bad_signature")
    assert "20 deliveries rejected in the last 5 minutes" in started.body
    assert "bad_signature 17, stale_timestamp 3" in started.body
    assert "check STRIPE_WEBHOOK_SECRET" in started.body
    assert check(engine, settings, T0 + timedelta(minutes=4)) == []  # still on: no repeat

    (ended,) = check(engine, settings, T0 + timedelta(minutes=5, seconds=1))
    assert (ended.rule, ended.kind, ended.state) == ("rejections", "ended", "normal")
    assert "back under 20 in 5 minutes" in ended.title
    assert len(hook.messages()) == 2
    assert "10.0.0.9" not in stored_texts(engine)  # client addresses stay in the rejections


def test_failed_payments_rising_by_the_threshold_within_an_hour(engine, database_url, receivers):
    hook, _ = receivers
    settings = alert_settings(database_url, hook)
    feed(engine, "product.created", sf.product("prod_a", "A"), T0)
    assert check(engine, settings, T0, rule="failed_payments") == []
    for n in range(9):
        invoice = sf.invoice(f"in_{n}", "open", subscription_id=f"sub_{n}")
        feed(engine, "invoice.payment_failed", invoice, T0 + timedelta(minutes=1))
    assert check(engine, settings, T0 + timedelta(minutes=2), rule="failed_payments") == []

    invoice = sf.invoice("in_9", "open", subscription_id="sub_9")
    feed(engine, "invoice.payment_failed", invoice, T0 + timedelta(minutes=3))
    (started,) = check(engine, settings, T0 + timedelta(minutes=4), rule="failed_payments")
    assert (started.kind, started.state) == ("started", "failed payments")
    assert started.title == "PenguinMails Finance: Failed payments rose by 10 within an hour"
    assert "10 failed payments now, 0 at the lowest in the last hour: up 10" in started.body
    assert "https://dashboard.stripe.com/test/payments" in started.body
    assert check(engine, settings, T0 + timedelta(minutes=30), rule="failed_payments") == []

    # An hour on, the count has stayed level: no longer rising.
    (ended,) = check(engine, settings, T0 + timedelta(minutes=91), rule="failed_payments")
    assert (ended.kind, ended.state) == ("ended", "normal")
    assert "10 failed payments now, 10 at the lowest in the last hour: up 0" in ended.body
    assert "Failed payments no longer rising" in hook.messages()[-1]
    assert_nothing_secret(stored_texts(engine), *hook.messages())
    with read_transaction(engine) as conn:  # one sample a minute, for the last hour only
        minutes = alert_samples.c.measure == FAILED_PAYMENTS_MEASURE
        samples = conn.execute(select(alert_samples.c.taken_at).where(minutes)).scalars().all()
        days = alert_samples.c.measure == FAILED_PAYMENTS_DAILY_MEASURE
        by_day = conn.execute(select(alert_samples.c.sample_value).where(days)).scalars().all()
    assert all(sample >= T0 + timedelta(minutes=30) for sample in samples)
    assert by_day == [10]  # and one row a day, for the Overview: the day's latest count


def test_processes_evaluating_at_once_send_each_change_once(engine, database_url, receivers):
    hook, _ = receivers
    settings = alert_settings(database_url, hook)
    engines = [make_engine(database_url) for _ in range(4)]
    found: list[list[store.AlertRecord]] = []
    start = threading.Barrier(len(engines))

    def process(own):
        start.wait()
        found.append(check(own, settings, T0))

    threads = [threading.Thread(target=process, args=(own,)) for own in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for own in engines:
        own.dispose()
    assert sorted(len(claimed) for claimed in found) == [0, 0, 0, 1]
    assert len(hook.messages()) == 1


def test_a_failing_channel_is_retried_and_every_attempt_kept(engine, database_url):
    with json_receiver(statuses=[500, 200]) as hook:
        settings = alert_settings(database_url, hook)
        (alert,) = check(engine, settings, T0)
    assert alert.status == "sent"
    first, second = alert.deliveries
    assert (first.attempt, first.outcome, second.attempt, second.outcome) == (
        1,
        "failed",
        2,
        "sent",
    )
    assert "error=500" in (first.detail or "")
    assert first.channel_name == second.channel_name == f"json://127.0.0.1:{hook.port}"
    assert second.attempted_at > first.attempted_at
    assert len(hook.posts) == 2
    assert_nothing_secret(stored_texts(engine))


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # waits out its backoff
def test_a_channel_that_keeps_failing_is_given_up_and_the_failure_kept(engine, database_url):
    with json_receiver(statuses=[503] * sending.MAX_ATTEMPTS) as hook, smtp_receiver() as mail:
        settings = alert_settings(database_url, hook, mail)
        (alert,) = check(engine, settings, T0)
    assert alert.status == "failed"
    by_channel = [(d.channel, d.attempt, d.outcome) for d in alert.deliveries]
    assert sorted(by_channel) == [
        *[(1, n, "failed") for n in range(1, sending.MAX_ATTEMPTS + 1)],
        (2, 1, "sent"),
    ]
    assert len(mail.mails) == 1


def test_a_sender_that_stopped_half_way_is_taken_over_without_resending(
    engine, database_url, receivers
):
    """The alert stays `sending` past its hold; another process sends the channels left."""
    hook, mail = receivers
    settings = alert_settings(database_url, hook, mail)
    with write_transaction(engine) as conn:
        alert = store.add_alert(
            conn=conn,
            rule="webhook_health",
            kind="started",
            state="delayed",
            title="PenguinMails Finance: Webhook health is delayed",
            body="Webhook health is delayed.",
            now=T0,
            hold=CLAIM_HOLD,
        )
    store.record_attempt(
        engine=engine,
        alert_id=alert.id,
        channel=1,
        channel_name="json://127.0.0.1",
        attempt=1,
        outcome="sent",
        detail="",
        now=T0,
    )
    assert store.take_stalled(engine=engine, now=T0 + CLAIM_HOLD / 2, hold=CLAIM_HOLD) == []
    (taken,) = store.take_stalled(engine=engine, now=T0 + CLAIM_HOLD * 2, hold=CLAIM_HOLD)
    assert store.take_stalled(engine=engine, now=T0 + CLAIM_HOLD * 2, hold=CLAIM_HOLD) == []
    status = sending.deliver(
        engine=engine, alert=taken, urls=settings.alert_channels(), stop=threading.Event()
    )
    assert status == "sent"
    assert hook.posts == []  # it had taken the alert already
    assert len(mail.mails) == 1


def test_without_channels_alerts_are_kept_unsent(engine, database_url):
    settings = make_settings(database_url)
    (alert,) = evaluate(engine=engine, settings=settings, now=T0)
    assert (alert.rule, alert.status, alert.deliveries) == ("webhook_health", "unsent", ())
    with read_transaction(engine) as conn:
        assert store.alert_page(conn=conn, limit=10).alerts[0].id == alert.id


def test_a_test_alert_goes_the_same_way_and_is_kept_as_rule_test(engine, database_url, receivers):
    hook, mail = receivers
    settings = alert_settings(database_url, hook, mail)
    alert = send_test_alert(engine=engine, settings=settings, actor="dashboard:ada", now=T0)
    assert (alert.rule, alert.kind, alert.status, alert.triggered_by) == (
        "test",
        "test",
        "sent",
        "dashboard:ada",
    )
    assert [d.outcome for d in alert.deliveries] == ["sent", "sent"]
    assert hook.messages()[0].startswith("PenguinMails Finance: test alert")
    assert f"{DASHBOARD}/alerts" in hook.messages()[0]
    assert len(mail.mails) == 1


def test_history_pages_newest_first(engine, database_url, receivers):
    hook, _ = receivers
    settings = alert_settings(database_url, hook)
    sent = [
        send_test_alert(engine=engine, settings=settings, actor="cli:ops", now=T0).id
        for _ in range(5)
    ]
    with read_transaction(engine) as conn:
        first = store.alert_page(conn=conn, limit=3)
        second = store.alert_page(conn=conn, limit=3, before=first.older)
    assert [a.id for a in first.alerts] == sent[::-1][:3]
    assert [a.id for a in second.alerts] == sent[::-1][3:]
    assert second.older is None
    assert all(len(a.deliveries) == 1 for a in first.alerts + second.alerts)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("json://finance:hunter2@127.0.0.1:8123/hooks/T0KEN", "json://127.0.0.1:8123"),
        ("mailto://ops:hunter2@smtp.example.com?to=ops@example.com", "mailto://smtp.example.com"),
        ("mailtos://ops:hunter2@example.com", "mailtos://example.com"),
        ("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#finance", "slack:// (Slack)"),
    ],
)
def test_a_channel_is_named_by_scheme_and_host_only(url, shown):
    assert channels.describe(url) == shown
