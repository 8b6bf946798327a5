"""The feed check (SPEC 17) on a real store (SQLite and PostgreSQL), asking the stand-in for
Stripe's API over HTTP through the official library: what it decides, what it stores, how
health, /metrics and the alert rules read it, and the missed events it applies once."""

import threading
import time
from datetime import UTC, datetime

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from finance_core.alerts import sending
from finance_core.alerts.job import evaluate
from finance_core.backoff import Backoff
from finance_core.feed.feed_check import Verdict, check_now, latest_feed_check, run_feed_check
from finance_core.feed.ingest import StripeEvent, ingest_event
from finance_core.feed.stripe_api import Pager
from finance_core.store.db import read_transaction
from finance_core.store.models import webhook_events
from finance_core.views.queries import WebhookHealth, stripe_sync_status
from tests.conftest import make_settings
from tests.support import stripe_factory as sf
from tests.support.receivers import json_receiver
from tests.support.servers import ThreadedServer
from tests.support.stripe_api import API_KEY, event_destination, webhook_endpoint
from webhook_listener.app import create_app

URL = "https://finance.example.com/webhooks/stripe"
EVERYTHING = ["*"]
SNAPSHOT_TYPES = [
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "product.created",
    "product.updated",
    "product.deleted",
    "price.created",
    "price.updated",
    "price.deleted",
    "invoice.payment_failed",
    "invoice.paid",
    "invoice.payment_succeeded",
    "invoice.voided",
    "invoice.marked_uncollectible",
    "invoice.deleted",
    "invoice.updated",
]


def feed_settings(database_url, stripe_api, **overrides):
    values = {
        "stripe_api_key": API_KEY,
        "stripe_api_base": stripe_api.url,
        "stripe_endpoint_url": URL,
        **overrides,
    }
    return make_settings(database_url, **values)


def quick_pager():
    """A pager whose waits on 429 take no time (the waits are counted all the same)."""
    return Pager(backoff=Backoff(max_waits_in_a_row=2, sleep=lambda _: None))


def check(engine, settings, *, force=True, holder=None):
    return run_feed_check(
        engine=engine,
        settings=settings,
        now=datetime.now(UTC),
        force=force,
        holder=holder,
        pager=quick_pager(),
    )


def health(engine, settings):
    with read_transaction(engine) as conn:
        return stripe_sync_status(
            conn=conn, delayed_after=settings.webhook_delayed_after, now=datetime.now(UTC)
        )


def stored(engine):
    with read_transaction(engine) as conn:
        return latest_feed_check(conn=conn, now=datetime.now(UTC))


def received_webhook(engine):
    """A webhook arrived just now: health is `healthy` unless something else says otherwise."""
    event = sf.event("product.created", sf.product("prod_fc", "Pro"))
    ingest_event(
        engine=engine, event=StripeEvent.from_payload(event), received_at=datetime.now(UTC)
    )


def test_an_enabled_endpoint_with_every_event_is_ok(engine, database_url, stripe_api):
    stripe_api.put("webhook_endpoints", webhook_endpoint("we_ours", URL, EVERYTHING))
    stripe_api.put("webhook_endpoints", webhook_endpoint("we_other", "https://x.test/h", []))
    settings = feed_settings(database_url, stripe_api)
    received_webhook(engine)

    report = check(engine, settings)

    assert report.verdict == Verdict.OK
    assert [item.id for item in report.found] == ["we_ours"]
    assert report.problems == report.warnings == []
    state = stored(engine)
    assert state.ok and state.problem is None and state.report == report
    assert health(engine, settings).webhook_health is WebhookHealth.HEALTHY
    # Stripe returns a destination's URL only when asked: the check asks.
    (query,) = [q for path, q in stripe_api.requests if path == "/v2/core/event_destinations"]
    assert query == {"include[0]": ["webhook_endpoint.url"]}


def test_a_snapshot_endpoint_missing_a_type_turns_health_error_naming_the_number(
    engine, database_url, stripe_api
):
    events = [name for name in SNAPSHOT_TYPES if name != "invoice.payment_failed"]
    stripe_api.put("webhook_endpoints", webhook_endpoint("we_ours", URL, events))
    settings = feed_settings(database_url, stripe_api)
    received_webhook(engine)

    report = check(engine, settings)

    assert report.verdict == Verdict.ERROR
    assert report.missing_types == {"invoice.payment_failed": "failed payments"}
    status = health(engine, settings)
    assert status.webhook_health is WebhookHealth.ERROR
    assert (
        "failed payments will be wrong: Stripe does not send invoice.payment_failed here"
        in status.health_reason
    )


def test_a_thin_destination_missing_v1_types(engine, database_url, stripe_api):
    thin = ["v1." + name for name in SNAPSHOT_TYPES if not name.startswith("customer.")]
    stripe_api.put("event_destinations", event_destination("ed_ours", URL, thin))
    settings = feed_settings(database_url, stripe_api)

    report = check(engine, settings)

    assert report.verdict == Verdict.ERROR
    assert [item.payload for item in report.found] == ["thin"]
    assert set(report.missing_types) == {
        "v1.customer.subscription." + kind
        for kind in ("created", "updated", "deleted", "paused", "resumed")
    }
    assert report.problem.startswith(
        "active subscriptions and the plan distribution will be wrong: Stripe does not send "
        "v1.customer.subscription.created, "
    )
    # The thin types together with a snapshot endpoint for the rest: complete.
    stripe_api.put(
        "webhook_endpoints",
        webhook_endpoint("we_subs", URL, [n for n in SNAPSHOT_TYPES if n.startswith("cust")]),
    )
    assert check(engine, settings).verdict == Verdict.OK
    assert stored(engine).problem is None


def test_disabled_with_stripes_reason(engine, database_url, stripe_api):
    stripe_api.put(
        "event_destinations",
        event_destination("ed_ours", URL, EVERYTHING, status="disabled", disabled_reason="user"),
    )
    stripe_api.put("webhook_endpoints", webhook_endpoint("we_ours", URL, ["*"], status="disabled"))
    settings = feed_settings(database_url, stripe_api)

    report = check(engine, settings)

    assert report.verdict == Verdict.ERROR
    assert "the event destination ed_ours is disabled" in report.problem
    assert "Stripe's reason: user" in report.problem
    assert "the webhook endpoint we_ours is disabled" in report.problem
    assert report.missing_types == {}  # nothing enabled to be incomplete
    assert "ed_ours is disabled" in health(engine, settings).health_reason


def test_none_found(engine, database_url, stripe_api):
    stripe_api.put("webhook_endpoints", webhook_endpoint("we_x", "https://other.test/w", ["*"]))
    stripe_api.put("event_destinations", event_destination("ed_x", "https://other.test/w", ["*"]))
    settings = feed_settings(database_url, stripe_api)

    report = check(engine, settings)

    assert report.verdict == Verdict.ERROR
    assert report.found == []
    assert f"Stripe has no webhook endpoint or event destination for {URL}" in report.problem
    assert health(engine, settings).webhook_health is WebhookHealth.ERROR


def test_an_old_api_version_is_a_warning_only(engine, database_url, stripe_api):
    stripe_api.put(
        "webhook_endpoints", webhook_endpoint("we_ours", URL, EVERYTHING, api_version="2019-12-03")
    )
    settings = feed_settings(database_url, stripe_api)
    received_webhook(engine)

    report = check(engine, settings)

    assert report.verdict == Verdict.OK
    (warning,) = report.warnings
    assert "API version 2019-12-03, older than the oldest this listener reads" in warning
    assert health(engine, settings).webhook_health is WebhookHealth.HEALTHY


def test_missed_events_are_applied_once_by_one_of_two_listeners(engine, database_url, stripe_api):
    stripe_api.put("webhook_endpoints", webhook_endpoint("we_ours", URL, EVERYTHING))
    now = int(time.time())
    missed = [
        sf.event("customer.subscription.created", sf.subscription(f"sub_m{i}", "active", "prod_a"))
        for i in range(3)
    ]
    delivered = sf.event("product.created", sf.product("prod_a", "A"), created=now - 60)
    too_old = sf.event("product.created", sf.product("prod_b", "B"), created=now - 4 * 86400)
    for payload in [*missed, delivered, too_old]:
        stripe_api.put("events", {**payload, "_delivery_success": False})
    ingest_event(
        engine=engine,
        event=StripeEvent.from_payload(delivered),
        received_at=datetime.now(UTC),
    )
    settings = feed_settings(database_url, stripe_api)

    # Two listeners' jobs find the check due at the same moment: one claims it.
    results = []
    barrier = threading.Barrier(2)

    def listener(name):
        barrier.wait()
        results.append(check(engine, settings, force=False, holder=name))

    threads = [threading.Thread(target=listener, args=(f"listener-{n}",)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    reports = [report for report in results if report is not None]
    assert len(results) == 2 and len(reports) == 1
    tally = reports[0].missed_events
    assert (tally.fetched, tally.recovered, tally.already_stored, tally.failed) == (4, 3, 1, 0)
    with read_transaction(engine) as conn:
        ids = conn.execute(select(webhook_events.c.id)).scalars().all()
    assert sorted(ids) == sorted([e["id"] for e in missed] + [delivered["id"]])
    assert stored(engine).report.missed_events == tally

    # Not due again until FEED_CHECK_MINUTES have passed; a forced check applies nothing twice.
    assert check(engine, settings, force=False) is None
    again = check(engine, settings).missed_events
    assert (again.recovered, again.already_stored) == (0, 4)
    with read_transaction(engine) as conn:
        assert conn.execute(select(func.count()).select_from(webhook_events)).scalar() == 4


def test_a_key_without_permission_is_a_warning_and_changes_nothing(
    engine, database_url, stripe_api
):
    stripe_api.put("webhook_endpoints", webhook_endpoint("we_ours", URL, ["invoice.paid"]))
    settings = feed_settings(database_url, stripe_api)
    first = check(engine, settings)
    assert first.verdict == Verdict.ERROR

    stripe_api.fail("/v1/webhook_endpoints", 403)
    stripe_api.fail("/v1/events", 403)
    report = check(engine, settings)

    assert report.verdict == Verdict.UNAVAILABLE
    endpoints, events = report.warnings
    assert "STRIPE_API_KEY may not read webhook endpoints" in endpoints
    assert "Webhook Endpoints: Read" in endpoints and "rak_webhook_read" in endpoints
    assert "STRIPE_API_KEY may not read events" in events and "rak_event_read" in events
    state = stored(engine)
    assert state.verdict == Verdict.UNAVAILABLE
    assert state.problem == first.problem  # the last verdict Stripe allowed stands


def test_rate_limits_are_waited_out_or_left_for_the_next_check(engine, database_url, stripe_api):
    stripe_api.put("webhook_endpoints", webhook_endpoint("we_ours", URL, EVERYTHING))
    settings = feed_settings(database_url, stripe_api)
    stripe_api.fail("/v2/core/event_destinations", 429, headers={"Stripe-Should-Retry": "false"})
    waited = check(engine, settings)
    assert waited.verdict == Verdict.OK and waited.rate_limit_waits == 1

    stripe_api.fail(
        "/v1/webhook_endpoints", 429, times=10, headers={"Stripe-Should-Retry": "false"}
    )
    report = check(engine, settings)  # no exception: a warning, and the next check tries again
    assert report.verdict == Verdict.UNAVAILABLE
    assert "kept answering 429" in report.warnings[0]
    assert stored(engine).problem is None


def test_the_check_is_off_without_an_endpoint_url(engine, database_url, stripe_api):
    stripe_api.put("webhook_endpoints", webhook_endpoint("we_ours", URL, ["invoice.paid"]))
    settings = feed_settings(database_url, stripe_api)
    assert check(engine, settings).verdict == Verdict.ERROR
    stripe_api.requests.clear()

    off = check(engine, feed_settings(database_url, stripe_api, stripe_endpoint_url=""))

    assert off.verdict == Verdict.OFF
    assert off.warnings == ["STRIPE_ENDPOINT_URL is empty: the feed check is off"]
    assert stripe_api.requests == []  # Stripe is not asked
    state = stored(engine)
    assert state.verdict == Verdict.OFF and state.problem is None  # its old finding is gone


def scrape(url):
    samples = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            samples[sample.name] = sample.value
    return samples


def test_metrics_report_the_check(engine, database_url, stripe_api):
    settings = feed_settings(database_url, stripe_api)
    server = ThreadedServer(create_app(settings, engine, jobs=[])).start()
    try:
        assert "finance_feed_check_ok" not in scrape(server.url)  # never run
        stripe_api.put("webhook_endpoints", webhook_endpoint("we_ours", URL, ["invoice.paid"]))
        before = time.time()
        check(engine, settings)
    finally:  # the gauges are cached a few seconds: a new listener reads them afresh
        server.stop()
    server = ThreadedServer(create_app(settings, engine, jobs=[])).start()
    try:
        samples = scrape(server.url)
    finally:
        server.stop()
    assert samples["finance_feed_check_ok"] == 0.0
    assert before - 1 <= samples["finance_feed_check_timestamp_seconds"] <= time.time()
    stripe_api.put("webhook_endpoints", webhook_endpoint("we_ours", URL, EVERYTHING))
    check(engine, settings)
    server = ThreadedServer(create_app(settings, engine, jobs=[])).start()
    try:
        assert scrape(server.url)["finance_feed_check_ok"] == 1.0
    finally:
        server.stop()


def test_the_alert_is_sent_once_when_the_check_finds_a_problem_and_once_when_it_ends(
    engine, database_url, stripe_api
):
    with json_receiver() as hook:
        settings = feed_settings(database_url, stripe_api, alert_urls=hook.url())

        def alerts():
            claimed = evaluate(engine=engine, settings=settings, now=datetime.now(UTC))
            for alert in claimed:
                sending.deliver(
                    engine=engine,
                    alert=alert,
                    urls=settings.alert_channels(),
                    stop=threading.Event(),
                )
            return [(alert.rule, alert.kind, alert.state) for alert in claimed]

        received_webhook(engine)
        stripe_api.put("webhook_endpoints", webhook_endpoint("we_ours", URL, EVERYTHING))
        check(engine, settings)
        assert alerts() == []  # healthy, and the check agrees

        stripe_api.put(
            "webhook_endpoints", webhook_endpoint("we_ours", URL, ["*"], status="disabled")
        )
        check(engine, settings)
        assert alerts() == [("webhook_health", "started", "error")]
        check(engine, settings)  # still disabled: no repeat
        assert alerts() == []

        stripe_api.put("webhook_endpoints", webhook_endpoint("we_ours", URL, EVERYTHING))
        received_webhook(engine)
        check(engine, settings)
        assert alerts() == [("webhook_health", "ended", "healthy")]

        started, ended = hook.wait_for(2)
        assert "the webhook endpoint we_ours is disabled" in started
        assert "https://dashboard.stripe.com/webhooks" in started
        assert "Webhook health is healthy" in ended
        assert len(hook.messages()) == 2


def test_check_now_where_the_check_is_off_leaves_the_listeners_result(
    engine, database_url, stripe_api
):
    stripe_api.put("webhook_endpoints", webhook_endpoint("we_ours", URL, ["invoice.paid"]))
    found = check(engine, feed_settings(database_url, stripe_api))
    stripe_api.requests.clear()
    # A dashboard with a key but no STRIPE_ENDPOINT_URL of its own: it cannot ask Stripe.
    here = feed_settings(database_url, stripe_api, stripe_endpoint_url="")

    report = check_now(engine=engine, settings=here, actor="ada", now=datetime.now(UTC))

    assert report.verdict == Verdict.OFF
    assert stripe_api.requests == []
    state = stored(engine)
    assert state.verdict == Verdict.ERROR and state.problem == found.problem
