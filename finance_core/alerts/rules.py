"""The alert rules of SPEC 12: small functions over store reads, each saying whether it holds now.

A rule is `rule(*, conn, settings, now) -> Finding`. Its state is named in the words the API
uses (`healthy`, `delayed`, `error`; a rejection reason code; "failed payments"), and its
numbers, advice and link make the alert's text. No text carries a secret or customer data:
they are built from counts, reason codes and times only.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine

from finance_core.alerts import samples
from finance_core.feed.rejections import rejections_between
from finance_core.settings import Settings
from finance_core.store.db import read_transaction
from finance_core.views.queries import WebhookHealth, stripe_sync_status

REJECTIONS_WINDOW = timedelta(minutes=5)
RISE_WINDOW = timedelta(hours=1)
FAILED_PAYMENTS_MEASURE = "failed_payments"
# Dashboard pages (url_path in app.py) an alert links to.
WEBHOOKS_PAGE = "webhook-health"
OVERVIEW_PAGE = "home"

# What to do about a flood of rejections, by the most common reason.
REJECTION_ADVICE = {
    "bad_signature": (
        "check STRIPE_WEBHOOK_SECRET: deliveries are signed with a secret the listener does "
        "not have (a rotated secret, or a new endpoint). Set it to the endpoint's current "
        "whsec_... secret from the Stripe Dashboard (old and new comma-separated while both "
        "are in use) and restart the listener."
    ),
    "stale_timestamp": (
        "check the listener host's clock (NTP) and STRIPE_WEBHOOK_TOLERANCE; old deliveries "
        "being replayed look like this too."
    ),
    "body_too_large": (
        "if these are Stripe's events, raise WEBHOOK_MAX_BODY_BYTES; otherwise block the sender."
    ),
    "client_disconnected": (
        "clients go away mid-body: check the network and any proxy in front of the listener."
    ),
}
OTHER_REJECTION_ADVICE = (
    "something other than Stripe is posting to /webhooks/stripe, or a proxy in front of the "
    "listener alters the requests: see the client addresses of the rejected deliveries."
)
HEALTH_ADVICE = {
    WebhookHealth.DELAYED: (
        "check that the listener is running and reachable from Stripe, and whether the Stripe "
        "Dashboard (Developers > Webhooks) shows failed deliveries; once they flow again, "
        "`python -m finance_core sync` recovers what Stripe could not deliver."
    ),
    WebhookHealth.ERROR: (
        "open the Webhooks page, read the failed events' errors, then replay them once the "
        "cause is fixed (`python -m finance_core replay`) or dismiss them."
    ),
}
FEED_CHECK_ADVICE = (
    "fix the webhook endpoint in the Stripe Dashboard (https://dashboard.stripe.com/webhooks): "
    "enable it, or add the event types named above; then press Check now on the Webhooks page "
    "(or wait for the next check), and run `python -m finance_core sync` for what was missed."
)
FAILED_PAYMENTS_ADVICE = (
    "see which invoices fail in the Stripe Dashboard's payments (a card network or Stripe "
    "outage, or a price or product change, makes many fail at once)."
)


@dataclass(frozen=True, slots=True)
class Finding:
    """A rule's condition now: whether it holds, its state, its numbers, and what to do."""

    rule: str
    active: bool
    state: str
    headline: str
    facts: str
    advice: str
    page: str


Rule = Callable[..., Finding]


def webhook_health(*, conn: Connection, settings: Settings, now: datetime) -> Finding:
    """Webhook health has left `healthy` (to `delayed` or `error`), with its reason."""
    status = stripe_sync_status(conn=conn, delayed_after=settings.webhook_delayed_after, now=now)
    health = status.webhook_health
    received = status.last_webhook_received
    last = f"last webhook received {when(received)}" if received else "no webhook received yet"
    return Finding(
        rule="webhook_health",
        active=health is not WebhookHealth.HEALTHY,
        state=health.value,
        headline=f"Webhook health is {health.value}",
        facts=(
            f"Webhook health is {health.value}: {status.health_reason}; {last}; "
            f"{status.unresolved_failed_events} failed events awaiting action."
        ),
        advice=(
            FEED_CHECK_ADVICE
            if status.feed_check_problem and health is WebhookHealth.ERROR
            else HEALTH_ADVICE.get(health, "nothing: webhooks are arriving and applied.")
        ),
        page=WEBHOOKS_PAGE,
    )


def rejections(*, conn: Connection, settings: Settings, now: datetime) -> Finding:
    """At least ALERT_REJECTIONS deliveries rejected in 5 minutes, with the commonest reason."""
    by_reason = rejections_between(conn=conn, start=now - REJECTIONS_WINDOW, end=now)
    total = sum(by_reason.values())
    threshold = settings.alert_rejections
    active = total >= threshold
    reasons = ", ".join(f"{reason} {count}" for reason, count in by_reason.items())
    top = next(iter(by_reason), None)
    return Finding(
        rule="rejections",
        active=active,
        state=top if active and top else "normal",
        headline=(
            f"{total} deliveries rejected in 5 minutes, mostly {top}"
            if active
            else f"Rejected deliveries back under {threshold} in 5 minutes"
        ),
        facts=(
            f"{total} deliveries rejected in the last 5 minutes (the alert is at {threshold})"
            + (f": {reasons}." if reasons else ".")
        ),
        advice=(
            REJECTION_ADVICE.get(top, OTHER_REJECTION_ADVICE)
            if active and top
            else "nothing: rejections are back under the threshold."
        ),
        page=WEBHOOKS_PAGE,
    )


def failed_payments(*, conn: Connection, settings: Settings, now: datetime) -> Finding:
    """Failed payments rose by at least ALERT_FAILED_PAYMENTS_RISE within the last hour.

    The rise is the count now over the lowest count sampled in the last hour, so it ends once
    the failures are settled or the count has stayed level for an hour.
    """
    status = stripe_sync_status(conn=conn, delayed_after=settings.webhook_delayed_after, now=now)
    count = status.failed_payments_count
    lowest = samples.lowest_sample(
        conn=conn, measure=FAILED_PAYMENTS_MEASURE, start=now - RISE_WINDOW, end=now
    )
    lowest = count if lowest is None else min(lowest, count)
    rise, threshold = count - lowest, settings.alert_failed_payments_rise
    active = rise >= threshold
    return Finding(
        rule="failed_payments",
        active=active,
        state="failed payments" if active else "normal",
        headline=(
            f"Failed payments rose by {rise} within an hour"
            if active
            else "Failed payments no longer rising"
        ),
        facts=(
            f"{count} failed payments now, {lowest} at the lowest in the last hour: up {rise} "
            f"(the alert is at a rise of {threshold}). Stripe: {status.stripe_dashboard_url}"
        ),
        advice=FAILED_PAYMENTS_ADVICE if active else "nothing: failed payments stopped rising.",
        page=OVERVIEW_PAGE,
    )


def sample_failed_payments(*, engine: Engine, settings: Settings, now: datetime) -> None:
    """Keep the failed payments count: this minute's for the rule, the day's for the Overview."""
    with read_transaction(engine) as conn:
        status = stripe_sync_status(
            conn=conn, delayed_after=settings.webhook_delayed_after, now=now
        )
    samples.record_sample(
        engine=engine,
        measure=FAILED_PAYMENTS_MEASURE,
        value=status.failed_payments_count,
        now=now,
    )
    samples.record_day_figure(
        engine=engine,
        measure=samples.FAILED_PAYMENTS_DAILY_MEASURE,
        value=status.failed_payments_count,
        now=now,
    )


RULES: dict[str, Rule] = {
    "webhook_health": webhook_health,
    "rejections": rejections,
    "failed_payments": failed_payments,
}
RULE_TITLES = {
    "webhook_health": "webhook health",
    "rejections": "rejected deliveries",
    "failed_payments": "failed payments rising",
}


def when(moment: datetime) -> str:
    """A UTC time to the second, as the alerts and the dashboard write it."""
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def started_text(finding: Finding, *, dashboard_url: str) -> tuple[str, str]:
    """The title and body of the alert that says a rule's condition started."""
    lines = [
        f"Alert, rule {RULE_TITLES[finding.rule]} ({finding.rule}): state {finding.state}.",
        finding.facts,
        f"What to do: {finding.advice}",
    ]
    return f"PenguinMails Finance: {finding.headline}", _with_link(
        lines, dashboard_url, finding.page
    )


def ended_text(
    finding: Finding, *, started_as: str, since: datetime, now: datetime, dashboard_url: str
) -> tuple[str, str]:
    """The title and body of the alert that says a rule's condition ended (recovered)."""
    minutes = max(0, int((now - since).total_seconds() // 60))
    lines = [
        f"Recovered, rule {RULE_TITLES[finding.rule]} ({finding.rule}): state {finding.state} "
        f"(it was {started_as} from {when(since)}, {minutes} minutes).",
        finding.facts,
        f"What to do: {finding.advice}",
    ]
    return f"PenguinMails Finance: {finding.headline}", _with_link(
        lines, dashboard_url, finding.page
    )


def text_of_test_alert(*, dashboard_url: str, now: datetime) -> tuple[str, str]:
    """The title and body of a test alert (the Alerts page's Send test alert)."""
    lines = [
        f"Test alert from PenguinMails Finance at {when(now)}: this channel receives its "
        "alerts (webhook health, rejected deliveries, failed payments rising).",
        "What to do: nothing.",
    ]
    return "PenguinMails Finance: test alert", _with_link(lines, dashboard_url, "alerts")


def _with_link(lines: list[str], dashboard_url: str, page: str) -> str:
    if dashboard_url:
        lines.append(f"Dashboard: {dashboard_url}/{page}")
    return "\n".join(lines)
