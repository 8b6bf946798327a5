"""The feed check (SPEC 17): Stripe's own view of our endpoint, its events and what it missed.

Silence can mean "nothing happened" or "Stripe stopped sending". Once every
FEED_CHECK_MINUTES (and on an admin's Check now) one process asks Stripe, through the official
library, about the webhook endpoints and event destinations whose URL is STRIPE_ENDPOINT_URL:
none found, one disabled, or enabled events that miss a type the numbers depend on make the
check's `problem`, which turns webhook health `error` (`finance_core.views.queries`) and so
goes through the alert rules; an API version we do not read is a warning. Events Stripe could
not deliver over the last 3 days are applied as `sync` applies them (the same code), counted.

One process at a time: the check's row in `feed_check` is claimed (`claimed_until`) by one
UPDATE that also says whether a check is due, so two listeners never both run it. When Stripe
cannot be asked (a key without permission, rate limits that outlast the waits, an outage) the
check says so as a warning and leaves the previous verdict's problem as it was.
"""

import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import stripe
from sqlalchemy import Connection, Engine, and_, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from finance_core.access.audit import record_action
from finance_core.backoff import Backoff
from finance_core.feed.stripe_api import (
    Pager,
    StripePermissionDenied,
    StripeUnavailable,
    make_client,
)
from finance_core.feed.sync import EventTally, recover_missed_events
from finance_core.log_text import loggable
from finance_core.settings import Settings
from finance_core.store import leases
from finance_core.store.db import is_unavailable, write_transaction
from finance_core.store.models import FEED_CHECK_ROW, feed_check

log = logging.getLogger(__name__)

# The oldest API version whose payloads this listener is tested to read (the oldest fixture's).
OLDEST_API_VERSION = "2020-03-02"
MISSED_EVENTS_LOOKBACK = timedelta(days=3)  # how long Stripe retries a delivery
# Longer than a check can take (its 429 waits included); past it another process may check.
CLAIM_HOLD = timedelta(minutes=10)
# How often the job looks whether a check is due (FEED_CHECK_MINUTES if shorter).
POLL = timedelta(minutes=1)
MAX_ERRORS_KEPT = 20
STRIPE_WEBHOOKS = "https://dashboard.stripe.com/webhooks"
STRIPE_API_KEYS = "https://dashboard.stripe.com/apikeys"

SUBSCRIPTIONS = "active subscriptions and the plan distribution"
PLANS = "plan names (products and prices)"
FAILED = "failed payments"
SETTLED = "failed payments (a settled invoice would stay counted as failing)"
# The types the numbers depend on (SPEC 4's list), with the number each one breaks.
REQUIRED_EVENTS: dict[str, str] = {
    "customer.subscription.created": SUBSCRIPTIONS,
    "customer.subscription.updated": SUBSCRIPTIONS,
    "customer.subscription.deleted": SUBSCRIPTIONS,
    "customer.subscription.paused": SUBSCRIPTIONS,
    "customer.subscription.resumed": SUBSCRIPTIONS,
    "product.created": PLANS,
    "product.updated": PLANS,
    "product.deleted": PLANS,
    "price.created": PLANS,
    "price.updated": PLANS,
    "price.deleted": PLANS,
    "invoice.payment_failed": FAILED,
    "invoice.paid": SETTLED,
    "invoice.payment_succeeded": SETTLED,
    "invoice.voided": SETTLED,
    "invoice.marked_uncollectible": SETTLED,
    "invoice.deleted": SETTLED,
    "invoice.updated": SETTLED,
}
THIN_PREFIX = "v1."

# What a restricted key needs, by what was read (Stripe's 403 names the permission too).
PERMISSIONS = {
    "webhook endpoints": "Webhook Endpoints: Read (rak_webhook_read)",
    "event destinations": "Event Destinations: Read (read access to webhook endpoints, "
    "rak_webhook_read)",
    "events": "Events: Read (rak_event_read)",
}


class Verdict:
    OK = "ok"  # found, enabled, complete (warnings may remain)
    ERROR = "error"  # missing, disabled, or missing types: health `error`
    OFF = "off"  # STRIPE_ENDPOINT_URL or STRIPE_API_KEY empty
    UNAVAILABLE = "unavailable"  # Stripe could not be asked; the previous problem stands


class _PermissionDenied(RuntimeError):
    """A restricted key may not read something the check reads."""


@dataclass
class Destination:
    """One webhook endpoint or event destination of ours, as Stripe describes it."""

    kind: str  # "webhook endpoint" or "event destination"
    id: str
    status: str
    payload: str  # "snapshot" or "thin"
    enabled_events: list[str]
    api_version: str | None
    disabled_reason: str | None = None


@dataclass
class FeedCheckReport:
    """What one check asked and found; stored as JSON with the check."""

    checked_at: str = ""
    endpoint_url: str = ""
    verdict: str = Verdict.OFF
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    found: list[Destination] = field(default_factory=list)
    # Missing type -> the number it breaks.
    missing_types: dict[str, str] = field(default_factory=dict)
    missed_events: EventTally = field(default_factory=EventTally)
    rate_limit_waits: int = 0
    errors: list[str] = field(default_factory=list)
    triggered_by: str = "schedule"

    @property
    def problem(self) -> str | None:
        """The reason health is `error`, in words; None when there is none."""
        return "; ".join(self.problems) or None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "FeedCheckReport":
        data = json.loads(text)
        data["found"] = [Destination(**item) for item in data.get("found", [])]
        data["missed_events"] = EventTally(**data.get("missed_events", {}))
        return cls(**data)


@dataclass(frozen=True, slots=True)
class FeedCheckState:
    """The stored result: the latest check, and the problem health reads."""

    checked_at: datetime | None
    verdict: str | None
    problem: str | None
    report: FeedCheckReport | None
    running: bool

    @property
    def ok(self) -> bool:
        """Whether the latest check found the feed complete (warnings allowed)."""
        return self.verdict == Verdict.OK


def latest_feed_check(*, conn: Connection, now: datetime) -> FeedCheckState:
    """The stored feed check (nothing yet: all None)."""
    row = conn.execute(select(feed_check).where(feed_check.c.id == FEED_CHECK_ROW)).first()
    if row is None:
        return FeedCheckState(None, None, None, None, False)
    return FeedCheckState(
        checked_at=row.checked_at,
        verdict=row.verdict,
        problem=row.problem,
        report=FeedCheckReport.from_json(row.report) if row.report else None,
        running=row.claimed_until is not None and row.claimed_until > now,
    )


def decide(
    found: list[Destination], endpoint_url: str, report: FeedCheckReport, library_version: str
) -> None:
    """Fill the report's problems, missing types and warnings from what Stripe described."""
    if not found:
        report.problems.append(
            f"Stripe has no webhook endpoint or event destination for {endpoint_url}: it sends "
            "nothing here. Add one in the Stripe Dashboard (Developers > Webhooks)"
        )
        return
    for item in found:
        if item.status != "enabled":
            why = (
                f"Stripe's reason: {item.disabled_reason}"
                if item.disabled_reason
                else "Stripe gives no reason: it disables an endpoint whose deliveries have "
                "failed for days, or someone disabled it"
            )
            report.problems.append(
                f"the {item.kind} {item.id} is {item.status}: Stripe sends nothing through "
                f"it ({why}). Enable it in the Stripe Dashboard"
            )
    enabled = [item for item in found if item.status == "enabled"]
    if enabled:
        covered = set().union(*(_covered(item) for item in enabled))
        all_thin = all(item.payload == "thin" for item in enabled)
        missing = [name for name in REQUIRED_EVENTS if name not in covered and "*" not in covered]
        for name in missing:
            shown = THIN_PREFIX + name if all_thin else name
            report.missing_types[shown] = REQUIRED_EVENTS[name]
        by_number: dict[str, list[str]] = {}
        for shown, number in report.missing_types.items():
            by_number.setdefault(number, []).append(shown)
        for number, names in by_number.items():
            report.problems.append(
                f"{number} will be wrong: Stripe does not send {', '.join(names)} here"
            )
    for item in found:
        version = item.api_version
        if item.payload != "snapshot" or not version:
            continue
        if version[:10] < OLDEST_API_VERSION:
            report.warnings.append(
                f"the {item.kind} {item.id} is on API version {version}, older than the oldest "
                f"this listener reads ({OLDEST_API_VERSION}): its payloads may be misread. "
                "Create an endpoint on a newer version in the Stripe Dashboard"
            )
        elif version[:10] > library_version[:10]:
            report.warnings.append(
                f"the {item.kind} {item.id} is on API version {version}, newer than this "
                f"listener's stripe library knows ({library_version}): upgrade the listener"
            )


def _covered(item: Destination) -> set[str]:
    """The snapshot event types a destination delivers ("*" for all)."""
    if item.payload == "thin":
        return {
            "*" if name in ("*", "v1.*") else name.removeprefix(THIN_PREFIX)
            for name in item.enabled_events
            if name == "*" or name.startswith(THIN_PREFIX)
        }
    return set(item.enabled_events)


def check_feed(
    *,
    engine: Engine,
    settings: Settings,
    client: stripe.StripeClient,
    pager: Pager,
    now: datetime,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> FeedCheckReport:
    """Ask Stripe about our endpoint and apply what it could not deliver; the report."""
    url = settings.stripe_endpoint_url
    report = FeedCheckReport(checked_at=now.isoformat(), endpoint_url=url)

    def error(message: str) -> None:
        log.warning("feed check: %s", loggable(message))
        if len(report.errors) < MAX_ERRORS_KEPT:
            report.errors.append(message[:500])

    decided = True
    try:
        found = [
            *_webhook_endpoints(client, pager, url),
            *_event_destinations(client, pager, url),
        ]
    except _PermissionDenied as exc:
        decided = False
        report.warnings.append(str(exc))
    except StripeUnavailable as exc:
        decided = False
        report.warnings.append(f"Stripe could not be asked about the endpoint: {exc}")
    if decided:
        report.found = found
        decide(found, url, report, stripe.api_version)
    try:
        recover_missed_events(
            engine=engine,
            client=client,
            pager=pager,
            since=int((now - MISSED_EVENTS_LOOKBACK).timestamp()),
            tally=report.missed_events,
            clock=clock,
            on_error=error,
        )
    except StripeUnavailable as exc:
        report.warnings.append(
            _permission_text("events", str(exc))
            if _is_permission(exc)
            else f"events Stripe could not deliver were not read: {exc}"
        )
    report.rate_limit_waits = pager.rate_limit_waits
    if not decided:
        report.verdict = Verdict.UNAVAILABLE
    else:
        report.verdict = Verdict.ERROR if report.problems else Verdict.OK
    return report


def _webhook_endpoints(client: stripe.StripeClient, pager: Pager, url: str) -> list[Destination]:
    items = _read_all(pager, "webhook endpoints", lambda: client.v1.webhook_endpoints.list({}))
    return [
        Destination(
            kind="webhook endpoint",
            id=str(item.get("id")),
            status=str(item.get("status") or "unknown"),
            payload="snapshot",
            enabled_events=[str(name) for name in item.get("enabled_events") or []],
            api_version=item.get("api_version"),
        )
        for item in items
        if _same_url(item.get("url"), url)
    ]


def _event_destinations(client: stripe.StripeClient, pager: Pager, url: str) -> list[Destination]:
    # Stripe returns `webhook_endpoint.url` only when asked with `include`.
    params: Any = {"include": ["webhook_endpoint.url"]}
    items = _read_all(
        pager, "event destinations", lambda: client.v2.core.event_destinations.list(params)
    )
    found = []
    for item in items:
        endpoint = item.get("webhook_endpoint") or {}
        if item.get("type") != "webhook_endpoint" or not _same_url(endpoint.get("url"), url):
            continue
        details = item.get("status_details") or {}
        disabled = details.get("disabled") or {}
        found.append(
            Destination(
                kind="event destination",
                id=str(item.get("id")),
                status=str(item.get("status") or "unknown"),
                payload=str(item.get("event_payload") or "snapshot"),
                enabled_events=[str(name) for name in item.get("enabled_events") or []],
                api_version=item.get("snapshot_api_version"),
                disabled_reason=disabled.get("reason"),
            )
        )
    return found


def _read_all(pager: Pager, what: str, first_page: Callable[[], Any]) -> list[dict[str, Any]]:
    """Every item of a short listing, read again from the start after a 429."""

    def read() -> list[dict[str, Any]]:
        return [item.to_dict(for_json=True) for item in first_page().auto_paging_iter()]

    try:
        result: list[dict[str, Any]] = pager.call(read)
    except StripeUnavailable as exc:
        if _is_permission(exc):
            raise _PermissionDenied(_permission_text(what, str(exc))) from None
        raise
    return result


def _is_permission(exc: StripeUnavailable) -> bool:
    return isinstance(exc, StripePermissionDenied)


def _permission_text(what: str, message: str) -> str:
    named = re.search(r"\brak_[a-z_]+\b", message)
    stripe_says = f" (Stripe names {named.group(0)})" if named else ""
    return (
        f"STRIPE_API_KEY may not read {what}: give the restricted key "
        f"{PERMISSIONS[what]}{stripe_says} in the Stripe Dashboard ({STRIPE_API_KEYS}). "
        "Until then the feed check cannot tell whether Stripe sends here"
    )


def _same_url(candidate: object, url: str) -> bool:
    return isinstance(candidate, str) and candidate.rstrip("/") == url.rstrip("/")


# --- the claim, the stored result, the job --------------------------------------------------


@cache
def _holder() -> str:
    return leases.holder_name()


def claim(*, engine: Engine, settings: Settings, now: datetime, force: bool, holder: str) -> bool:
    """Take the check if it is due (or `force`d) and no other process holds it; one UPDATE."""
    every = timedelta(minutes=settings.feed_check_minutes)
    free = or_(feed_check.c.claimed_until.is_(None), feed_check.c.claimed_until <= now)
    due = or_(
        feed_check.c.checked_at.is_(None),
        feed_check.c.checked_at <= now - every,
        and_(
            feed_check.c.requested_at.is_not(None),
            feed_check.c.requested_at > feed_check.c.checked_at,
        ),
        feed_check.c.verdict == Verdict.OFF,  # just turned on
    )
    with write_transaction(engine) as conn:
        taken = conn.execute(
            update(feed_check)
            .where(feed_check.c.id == FEED_CHECK_ROW, free if force else and_(free, due))
            .values(claimed_until=now + CLAIM_HOLD, claimed_by=holder[:255])
        )
        return taken.rowcount == 1


def _store(engine: Engine, report: FeedCheckReport, now: datetime, holder: str | None) -> None:
    values: dict[str, Any] = {
        "checked_at": now,
        "verdict": report.verdict,
        "report": report.to_json(),
        "claimed_until": None,
        "claimed_by": None,
    }
    if report.verdict != Verdict.UNAVAILABLE:  # otherwise the previous verdict's problem stands
        values["problem"] = report.problem
    where = [feed_check.c.id == FEED_CHECK_ROW]
    if holder is not None:
        where.append(feed_check.c.claimed_by == holder[:255])
    with write_transaction(engine) as conn:
        conn.execute(update(feed_check).where(*where).values(**values))


def _off_report(settings: Settings, now: datetime) -> FeedCheckReport | None:
    """The report of a check that cannot run (off); None when it can."""
    if not settings.stripe_endpoint_url:
        reason = "STRIPE_ENDPOINT_URL is empty: the feed check is off"
    elif settings.stripe_api_key is None:
        reason = "STRIPE_API_KEY is not set: the feed check cannot ask Stripe"
    else:
        return None
    return FeedCheckReport(
        checked_at=now.isoformat(),
        endpoint_url=settings.stripe_endpoint_url,
        verdict=Verdict.OFF,
        warnings=[reason],
    )


def run_feed_check(
    *,
    engine: Engine,
    settings: Settings,
    now: datetime,
    force: bool = False,
    actor: str = "schedule",
    holder: str | None = None,
    client: stripe.StripeClient | None = None,
    pager: Pager | None = None,
) -> FeedCheckReport | None:
    """Run the check if it is due (always when `force`d) and no other process runs it.

    Returns the report, or None when another process holds the check or none is due.
    """
    holder = holder or _holder()
    off = _off_report(settings, now)
    if off is not None:
        off.triggered_by = actor
        with write_transaction(engine) as conn:
            conn.execute(
                update(feed_check)
                .where(
                    feed_check.c.id == FEED_CHECK_ROW,
                    feed_check.c.verdict.is_distinct_from(Verdict.OFF),
                )
                .values(checked_at=now, verdict=Verdict.OFF, problem=None, report=off.to_json())
            )
        return off
    if not claim(engine=engine, settings=settings, now=now, force=force, holder=holder):
        return None
    try:
        report = check_feed(
            engine=engine,
            settings=settings,
            client=client or make_client(settings),
            pager=pager or Pager(backoff=Backoff(max_waits_in_a_row=3)),
            now=now,
        )
    except BaseException:
        with write_transaction(engine) as conn:  # let the next run try again at once
            conn.execute(
                update(feed_check)
                .where(feed_check.c.id == FEED_CHECK_ROW, feed_check.c.claimed_by == holder[:255])
                .values(claimed_until=None, claimed_by=None)
            )
        raise
    report.triggered_by = actor
    _store(engine, report, now, holder)
    log.info(
        "feed check: %s%s; %s missed events applied",
        report.verdict,
        f" ({loggable(report.problem)})" if report.problem else "",
        report.missed_events.recovered,
    )
    return report


def check_now(
    *, engine: Engine, settings: Settings, actor: str, now: datetime
) -> FeedCheckReport | None:
    """An admin's Check now: recorded in the audit log, then run here at once.

    None when another process is running the check right now. When this process cannot ask
    Stripe (STRIPE_ENDPOINT_URL or STRIPE_API_KEY not set here), the `off` report, and the
    stored result stays what the listeners' check found: their settings are not this one's.
    """
    off = _off_report(settings, now)
    if off is not None:
        off.triggered_by = actor
        return off
    with write_transaction(engine) as conn:
        conn.execute(
            update(feed_check).where(feed_check.c.id == FEED_CHECK_ROW).values(requested_at=now)
        )
        record_action(
            conn,
            actor=actor,
            action="feed_check_run",
            target="feed check",
            detail="Check now: asks Stripe about the webhook endpoint",
            now=now,
        )
    return run_feed_check(engine=engine, settings=settings, now=now, force=True, actor=actor)


def run_feed_checks(
    *, engine: Engine, settings: Settings, stop: threading.Event, round_done: Callable[[], None]
) -> None:
    """The background job: check whenever due (one process at a time), until `stop`.

    `round_done` is called after each look at whether a check is due (the listener's metrics).
    """
    poll = min(POLL, timedelta(minutes=settings.feed_check_minutes)).total_seconds()
    while not stop.is_set():
        try:
            report = run_feed_check(engine=engine, settings=settings, now=datetime.now(UTC))
        except SQLAlchemyError as exc:
            if not is_unavailable(exc):
                raise
            log.warning("feed check not run: the database is unreachable or busy")
            report = None
        if report is not None and report.verdict == Verdict.OFF:
            log.info("feed check off: %s", "; ".join(report.warnings))
            return
        if report is not None:
            round_done()
        stop.wait(poll)


def feed_check_gauges(*, conn: Connection, now: datetime) -> tuple[float, float] | None:
    """`finance_feed_check_ok` and `finance_feed_check_timestamp_seconds`; None when off or
    never run."""
    row = conn.execute(
        select(feed_check.c.checked_at, feed_check.c.verdict).where(
            feed_check.c.id == FEED_CHECK_ROW
        )
    ).first()
    if row is None or row.checked_at is None or row.verdict in (None, Verdict.OFF):
        return None
    return (1.0 if row.verdict == Verdict.OK else 0.0, row.checked_at.timestamp())
