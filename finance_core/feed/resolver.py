"""Resolve pending thin events: fetch each changed object once from Stripe and apply it.

A thin event says only which object changed. The resolver claims pending events (a lease in
their rows: `FOR UPDATE SKIP LOCKED` on PostgreSQL, the write lock on SQLite, so that several
listener processes never take the same event), groups them by object, and settles every
event whose change the store already holds: its snapshot twin was applied, or the object's
stored state is newer than the event (`state_created` later than the event's `created`).
For the rest it fetches the object with the official library, applies it through the same
handlers as `sync`, dated one second before it was read (a newer webhook state always wins),
and settles the events created before that: one fetch for however many events an object
had pending. An event too fresh for a fetch now to cover it waits a second or two, which
also coalesces a burst of changes to one object.

Fetches are paced under `STRIPE_API_MAX_RPS` (evenly spaced here, and within a moving window
shared by every listener through `RATE_LIMIT_STORAGE_URI`) and back off with jitter on 429,
5xx and network errors. A 404 settles the events: a product, price, plan or invoice that no
longer exists is marked deleted. A refused key or no key at all keeps the events pending
with the reason in their `error`, which webhook health reports once they have waited long.
"""

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import stripe
from limits import RateLimitItemPerSecond
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy import Connection, Engine, and_, null, or_, select, update

from finance_core.access.audit import record_action
from finance_core.feed.events import StripeEvent, ThinEvent
from finance_core.feed.handlers import API_STATE_EVENT_TYPES, DELETED_EVENT_TYPES, HANDLERS
from finance_core.feed.ingest import RESOURCE_PATHS, SETTLED_STATUSES
from finance_core.log_text import loggable
from finance_core.settings import Settings
from finance_core.store.db import read_transaction, write_transaction
from finance_core.store.leases import holder_name
from finance_core.store.models import invoices, prices, products, subscriptions, webhook_events

log = logging.getLogger(__name__)

CLAIM_LEASE = timedelta(seconds=15)
POLL_SECONDS = 0.5
# As sync: an API answer holds every change made a second before it was read.
STATE_MARGIN_S = 1
# Work claimed at once: about five seconds of fetches at the configured pace.
BATCH_SECONDS_OF_FETCHES = 5
FETCH_TIMEOUT_S = 10.0
PACE_SHARE = 0.9  # of STRIPE_API_MAX_RPS: the margin for requests' varying travel time
FETCH_THREADS = 8
NO_KEY_RETRY = timedelta(seconds=30)
KEY_REFUSED_RETRY = timedelta(seconds=60)
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 300.0
MAX_ERROR_LENGTH = 500
TABLES = {
    "subscription": subscriptions,
    "invoice": invoices,
    "product": products,
    "price": prices,
    "plan": prices,  # legacy plans are prices under another name
}

NO_KEY = (
    "STRIPE_API_KEY is not set on the listener, so thin events cannot be resolved: set a "
    "restricted key with read access to products, prices, subscriptions and invoices, and "
    "restart the listener"
)
KEY_REFUSED = "Stripe refused STRIPE_API_KEY ({status}): check the key and its permissions"
UNREACHABLE = "Stripe's API cannot be reached ({detail}); retrying with backoff"
RATE_LIMITED = "Stripe is rate limiting the fetches (429); retrying with backoff"
STRIPE_ERROR = "Stripe's API answered {status}; retrying with backoff"

Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class Pending:
    """A claimed thin event, as the resolver needs it."""

    id: str
    created: int
    livemode: bool
    attempts: int
    payload: str
    thin: ThinEvent

    @property
    def key(self) -> tuple[str, str]:
        """The object it is about: (related type, id)."""
        assert self.thin.related_type is not None and self.thin.related_id is not None
        return self.thin.related_type, self.thin.related_id


@dataclass
class CycleReport:
    """What one resolver cycle did (for tests, the dashboard and the logs)."""

    claimed: int = 0
    settled_without_fetch: int = 0
    fetched_objects: int = 0
    settled_by_fetch: int = 0
    not_found: int = 0
    waiting: int = 0
    failed: int = 0


class Retry(Exception):
    """A fetch that did not answer for good: try the object's events again later.

    `reason` (None: keep the one recorded before) is what health reports once the events
    have waited long; `failed_request` says whether Stripe was asked, which counts as an
    attempt and slows every fetch down for a while.
    """

    def __init__(self, reason: str | None, delay_s: float, *, failed_request: bool) -> None:
        super().__init__(reason or "waiting")
        self.reason = reason[:MAX_ERROR_LENGTH] if reason else None
        self.delay_s = delay_s
        self.failed_request = failed_request


class NotFound(Exception):
    """Stripe has no such object (404)."""


class Pacer:
    """Requests under `per_second` a second, for every listener process together.

    Starts are spaced evenly here, and each also takes a place in a moving one-second window
    in the rate-limit storage, which several listener processes share through Redis. Both
    run a tenth below the limit: requests take varying time to reach Stripe (threads, a busy
    machine, the network), and some that started apart arrive together.
    """

    def __init__(
        self,
        per_second: int,
        storage_uri: str,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        pace = max(1, int(per_second * PACE_SHARE))
        self.interval = 1.0 / pace
        self.limit = RateLimitItemPerSecond(pace)
        self.limiter = MovingWindowRateLimiter(storage_from_string(storage_uri))
        self.sleep, self.clock = sleep, clock
        self._next = 0.0
        self._lock = threading.Lock()

    def wait_turn(self) -> None:
        with self._lock:
            now = self.clock()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            self.sleep(start - now)
        while not self.limiter.hit(self.limit, "stripe-api-fetches"):
            self.sleep(self.interval)


@dataclass
class Backoff:
    """Jittered exponential delays, per object and, after 429s and outages, for every fetch."""

    first_s: float = FIRST_BACKOFF_S
    max_s: float = MAX_BACKOFF_S
    failures_in_a_row: int = 0
    paused_until: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def delay(self, attempts: int) -> float:
        ceiling = min(self.max_s, self.first_s * 2 ** max(0, attempts - 1))
        return ceiling * random.uniform(0.5, 1.0)

    def failed(self, delay_s: float) -> None:
        with self.lock:
            self.failures_in_a_row += 1
            self.paused_until = max(self.paused_until, time.monotonic() + delay_s)

    def succeeded(self) -> None:
        with self.lock:
            self.failures_in_a_row = 0

    def pause_left(self) -> float:
        return max(0.0, self.paused_until - time.monotonic())


def fetching_client(settings: Settings) -> stripe.StripeClient:
    """A client that does not retry by itself: every attempt goes through the pacer."""
    return stripe.StripeClient(
        settings.api_key(),
        base_addresses={"api": settings.stripe_api_base},
        max_network_retries=0,
        http_client=stripe.HTTPXClient(timeout=FETCH_TIMEOUT_S, allow_sync_methods=True),
    )


class Resolver:
    """Claims, coalesces, fetches and applies pending thin events; one per process."""

    def __init__(
        self,
        *,
        engine: Engine,
        settings: Settings,
        clock: Clock = lambda: datetime.now(UTC),
        holder: str | None = None,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.holder = holder or holder_name()
        self.rate = settings.stripe_api_max_rps
        self.batch_size = max(20, self.rate * BATCH_SECONDS_OF_FETCHES)
        self.client = fetching_client(settings) if settings.stripe_api_key is not None else None
        self.pacer = Pacer(self.rate, settings.rate_limit_storage_uri)
        self.backoff = Backoff()
        self.pool = ThreadPoolExecutor(FETCH_THREADS, thread_name_prefix="thin-fetch")
        self._claimed_at = clock()

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.release_claims()

    def run_once(self) -> CycleReport:
        """Read what is due, settle what the store covers, claim and fetch the rest; wait."""
        now = self.clock()
        report = CycleReport()
        due = self._due(now)
        report.claimed = len(due)
        if not due:
            return report
        by_object: dict[tuple[str, str], list[Pending]] = {}
        for pending in due:
            by_object.setdefault(pending.key, []).append(pending)
        covered = self._covered(by_object)
        self._settle_free([p.id for p in covered], now)
        report.settled_without_fetch = len(covered)
        covered_ids = {p.id for p in covered}
        to_fetch = {}
        for key, events in by_object.items():
            rest = [p for p in events if p.id not in covered_ids]
            if rest:
                to_fetch[key] = rest
        if not to_fetch:
            return report
        if self.client is None:
            waiting = [p for rest in to_fetch.values() for p in rest]
            self._wait_free(waiting, now, next_attempt=now + NO_KEY_RETRY, reason=NO_KEY)
            report.waiting = len(waiting)
            return report
        fetchable = {}
        for key, rest in to_fetch.items():
            if self._coverable(rest, now):
                fetchable[key] = rest
                continue
            # Too fresh: a fetch now would be dated before them (see STATE_MARGIN_S).
            newest = max(p.created for p in rest)
            ready = datetime.fromtimestamp(newest + STATE_MARGIN_S + 1, UTC)
            self._wait_free(rest, now, next_attempt=ready)
            report.waiting += len(rest)
        won = self._claim([p for rest in fetchable.values() for p in rest], now)
        self._claimed_at = now
        futures = []
        for key, rest in fetchable.items():
            ours = [p for p in rest if p.id in won]
            if ours:  # another resolver may have taken some of them meanwhile
                futures.append(self.pool.submit(self._fetch_and_apply, key, ours, report))
        for future in futures:
            future.result()
        return report

    # --- reading, claiming and settling -----------------------------------------------

    def _free(self, now: datetime) -> Any:
        """A pending event no live claim holds."""
        events = webhook_events.c
        return and_(
            events.status == "pending",
            or_(events.claimed_until.is_(None), events.claimed_until <= now),
        )

    def _due(self, now: datetime) -> list[Pending]:
        """The oldest pending events that nobody holds and that are due, read without a lock."""
        events = webhook_events.c
        due = (
            select(events.id, events.created, events.livemode, events.attempts, events.payload)
            .where(
                self._free(now),
                or_(events.next_attempt_at.is_(None), events.next_attempt_at <= now),
            )
            .order_by(events.first_received_at, events.id)
            .limit(self.batch_size)
        )
        with read_transaction(self.engine) as conn:
            rows = conn.execute(due).all()
        found = []
        for row in rows:
            pending = _pending(row, now)
            if pending is None:  # no payload to fetch from: keep it as failed rather than loop
                self._fail_free([row.id], "the pending thin event has no readable payload", now)
                continue
            found.append(pending)
        found.sort(key=lambda p: (p.created, p.id))
        return found

    def _claim(self, events: Sequence[Pending], now: datetime) -> set[str]:
        """Take these events for fetching; the ids this resolver won (a lease in their rows).

        `FOR UPDATE SKIP LOCKED` on PostgreSQL; on SQLite the write lock makes the update's
        condition the claim.
        """
        column = webhook_events.c
        won: set[str] = set()
        for chunk in _chunks([p.id for p in events]):
            free = (
                select(column.id)
                .where(column.id.in_(chunk), self._free(now))
                .with_for_update(skip_locked=True)
            )
            claim = (
                update(webhook_events)
                .where(column.id.in_(free.scalar_subquery()))
                .values(claimed_by=self.holder, claimed_until=now + CLAIM_LEASE)
                .returning(column.id)
            )
            with write_transaction(self.engine) as conn:
                won.update(conn.execute(claim).scalars())
        return won

    def _settle_free(self, event_ids: Sequence[str], now: datetime) -> None:
        """Settle events nobody holds (the store covers them: no fetch, no claim needed)."""
        for chunk in _chunks(event_ids):
            with write_transaction(self.engine) as conn:
                conn.execute(
                    update(webhook_events)
                    .where(webhook_events.c.id.in_(chunk), self._free(now))
                    .values(**_SETTLED, processed_at=now)
                )

    def _wait_free(
        self,
        events: Sequence[Pending],
        now: datetime,
        *,
        next_attempt: datetime,
        reason: str | None = None,
    ) -> None:
        """Put events nobody holds off until `next_attempt`, saying why when there is a why."""
        values: dict[str, Any] = {"next_attempt_at": next_attempt}
        if reason is not None:
            values["error"] = reason
        for chunk in _chunks([p.id for p in events]):
            with write_transaction(self.engine) as conn:
                conn.execute(
                    update(webhook_events)
                    .where(webhook_events.c.id.in_(chunk), self._free(now))
                    .values(**values)
                )

    def _fail_free(self, event_ids: Sequence[str], reason: str, now: datetime) -> None:
        with write_transaction(self.engine) as conn:
            conn.execute(
                update(webhook_events)
                .where(webhook_events.c.id.in_(list(event_ids)), self._free(now))
                .values(**_failed(reason))
            )

    def _covered(self, by_object: dict[tuple[str, str], list[Pending]]) -> list[Pending]:
        """Events whose change the store holds already: by a snapshot twin, or a newer state."""
        twins = {p.thin.snapshot_event for ps in by_object.values() for p in ps} - {None}
        with read_transaction(self.engine) as conn:
            settled_twins = _settled_events(conn, twins)
            stored = _state_times(conn, by_object)
        return [
            p
            for key, events in by_object.items()
            for p in events
            if p.thin.snapshot_event in settled_twins or p.created < stored.get(key, -1)
        ]

    @staticmethod
    def _coverable(events: Sequence[Pending], now: datetime) -> bool:
        return any(p.created < int(now.timestamp()) - STATE_MARGIN_S for p in events)

    def _release(
        self,
        events: Sequence[Pending],
        *,
        next_attempt: datetime,
        reason: str | None = None,
        count_attempt: bool = False,
    ) -> None:
        values: dict[str, Any] = {
            "claimed_by": null(),
            "claimed_until": null(),
            "next_attempt_at": next_attempt,
        }
        if reason is not None:
            values["error"] = reason
        if count_attempt:
            values["attempts"] = webhook_events.c.attempts + 1
        with write_transaction(self.engine) as conn:
            conn.execute(
                update(webhook_events).where(*self._ours([p.id for p in events])).values(**values)
            )

    def _fail(self, event_ids: Sequence[str], reason: str) -> None:
        """Keep as failed (health says error; an admin replays or dismisses it)."""
        with write_transaction(self.engine) as conn:
            self._fail_in(conn, event_ids, reason)

    def _ours(self, event_ids: Iterable[str]) -> tuple[Any, ...]:
        events = webhook_events.c
        return (
            events.id.in_(list(event_ids)),
            events.status == "pending",
            events.claimed_by == self.holder,
        )

    def release_claims(self) -> None:
        """Give back every event this resolver holds, so another may take them at once."""
        events = webhook_events.c
        with write_transaction(self.engine) as conn:
            conn.execute(
                update(webhook_events)
                .where(events.status == "pending", events.claimed_by == self.holder)
                .values(claimed_by=null(), claimed_until=null())
            )

    # --- fetching ---------------------------------------------------------------------

    def _keep_claim(self, events: Sequence[Pending]) -> None:
        """Renew the lease on these events when their batch has run for half of it."""
        now = self.clock()
        if now - self._claimed_at < CLAIM_LEASE / 2:
            return
        with write_transaction(self.engine) as conn:
            conn.execute(
                update(webhook_events)
                .where(*self._ours([p.id for p in events]))
                .values(claimed_until=now + CLAIM_LEASE)
            )

    def _fetch_and_apply(
        self, key: tuple[str, str], events: list[Pending], report: CycleReport
    ) -> None:
        kind, object_id = key
        newest = max(events, key=lambda p: (p.created, p.id))
        try:
            pause = self.backoff.pause_left()
            if pause > 0:  # waiting out a 429 or an outage another fetch ran into
                raise Retry(None, pause, failed_request=False)
            self._keep_claim(events)
            self.pacer.wait_turn()
            read_at = self.clock()
            obj = self._fetch(newest)
        except NotFound:
            self.backoff.succeeded()
            self._apply(kind, object_id, None, newest, events, read_at)
            report.not_found += 1
            report.settled_by_fetch += len(events)
            return
        except Retry as retry:
            if retry.failed_request:
                self.backoff.failed(retry.delay_s)
            when = self.clock() + timedelta(seconds=retry.delay_s)
            self._release(
                events, next_attempt=when, reason=retry.reason, count_attempt=retry.failed_request
            )
            report.waiting += len(events)
            return
        except Exception as exc:  # the library could not read our own stored payload
            log.exception(
                "thin event %s: fetching %s %s failed",
                loggable(newest.id),
                loggable(kind),
                loggable(object_id),
            )
            self._fail([p.id for p in events], f"{type(exc).__name__}: {exc}")
            report.failed += len(events)
            return
        self.backoff.succeeded()
        report.fetched_objects += 1
        settled = self._apply(kind, object_id, obj, newest, events, read_at)
        report.settled_by_fetch += settled
        report.waiting += len(events) - settled

    def _fetch(self, event: Pending) -> dict[str, Any]:
        """The event's object as a plain dict, through the official library."""
        assert self.client is not None
        try:
            notification = self.client.parse_event_notification_without_verification(event.payload)
            fetch = getattr(notification, "fetch_related_object", None)
            if fetch is None:  # a type this library version knows without a related object
                url = json.loads(event.payload)["related_object"]["url"]
                response = self.client.raw_request("get", url, stripe_context=notification.context)
                return self.client.deserialize(response, api_mode="V1").to_dict(for_json=True)
            return fetch().to_dict(for_json=True)
        except stripe.RateLimitError as exc:
            headers = {str(k).lower(): str(v) for k, v in (exc.headers or {}).items()}
            attempts = event.attempts + self.backoff.failures_in_a_row
            delay = self.backoff.delay(attempts)
            if headers.get("stripe-should-retry") == "false":
                delay = self.backoff.max_s  # Stripe says retrying soon will not help
            elif headers.get("retry-after", "").isdigit():
                delay = max(delay, float(headers["retry-after"]))
            raise Retry(RATE_LIMITED, delay, failed_request=True) from None
        except (stripe.AuthenticationError, stripe.PermissionError) as exc:
            reason = KEY_REFUSED.format(status=exc.http_status)
            raise Retry(reason, KEY_REFUSED_RETRY.total_seconds(), failed_request=True) from None
        except stripe.APIConnectionError as exc:
            detail = str(exc.user_message or exc).splitlines()[0][:200]
            delay = self.backoff.delay(event.attempts + self.backoff.failures_in_a_row)
            raise Retry(UNREACHABLE.format(detail=detail), delay, failed_request=True) from None
        except stripe.StripeError as exc:
            if exc.http_status == 404:
                raise NotFound from None
            if exc.http_status is not None and exc.http_status >= 500:
                delay = self.backoff.delay(event.attempts + self.backoff.failures_in_a_row)
                reason = STRIPE_ERROR.format(status=exc.http_status)
                raise Retry(reason, delay, failed_request=True) from None
            raise

    def _apply(
        self,
        kind: str,
        object_id: str,
        obj: dict[str, Any] | None,
        newest: Pending,
        events: list[Pending],
        read_at: datetime,
    ) -> int:
        """Write the object's state (or its deletion) and settle the events it covers."""
        state_created = int(read_at.timestamp()) - STATE_MARGIN_S
        now = self.clock()
        with write_transaction(self.engine) as conn:
            event_type = API_STATE_EVENT_TYPES[kind] if obj is not None else None
            if obj is None:
                event_type = DELETED_EVENT_TYPES.get(kind)
                obj = {"id": object_id, "object": kind, "deleted": True}
            if event_type is not None:  # a subscription gone at Stripe: nothing to apply
                state = StripeEvent(
                    id=newest.id,
                    type=event_type,
                    created=state_created,
                    livemode=newest.livemode,
                    api_version=None,
                    object=obj,
                )
                try:
                    with conn.begin_nested():
                        HANDLERS[event_type](conn, state, now)
                except Exception as exc:  # an object we cannot read: kept as failed
                    error = f"{kind} {object_id} from Stripe: {type(exc).__name__}: {exc}"
                    self._fail_in(conn, [p.id for p in events], error)
                    return 0
            if event_type is None or obj.get("deleted") is True:
                done = events  # the object no longer exists: nothing more can change
            else:
                stored = _state_times(conn, {(kind, object_id): events}).get((kind, object_id))
                bound = max(state_created, stored if stored is not None else state_created)
                done = [p for p in events if p.created < bound]
            _mark_settled(conn, [p.id for p in done], self.holder, now)
        done_ids = {p.id for p in done}
        rest = [p for p in events if p.id not in done_ids]
        if rest:  # changed again since it was read: fetch it again once that is coverable
            newest_rest = max(p.created for p in rest)
            self._release(
                rest, next_attempt=datetime.fromtimestamp(newest_rest + STATE_MARGIN_S + 1, UTC)
            )
        return len(done)

    def _fail_in(self, conn: Connection, event_ids: Sequence[str], reason: str) -> None:
        conn.execute(update(webhook_events).where(*self._ours(event_ids)).values(**_failed(reason)))


def resolve_forever(*, engine: Engine, settings: Settings, stop: threading.Event) -> None:
    """The listener's background job: resolve pending thin events until `stop`."""
    resolver = Resolver(engine=engine, settings=settings)
    if resolver.client is None:
        log.warning("STRIPE_API_KEY is not set: thin events are stored but not resolved")
    else:
        # A key (or a new one) at start: what waited for one, or backs off, is due now.
        with write_transaction(engine) as conn:
            _make_all_due(conn)
    try:
        while not stop.is_set():
            report = resolver.run_once()
            if report.claimed == 0 or report.claimed == report.waiting:
                stop.wait(POLL_SECONDS)
    finally:
        resolver.close()


def retry_pending_now(*, engine: Engine, actor: str, now: datetime) -> int:
    """An admin's "Resolve now": every waiting thin event due at once; how many (audited)."""
    with write_transaction(engine) as conn:
        due = _make_all_due(conn)
        record_action(
            conn,
            actor=actor,
            action="thin_events_retried",
            target="pending thin events",
            detail=f"{due} made due at once",
            now=now,
        )
    return due


def _make_all_due(conn: Connection) -> int:
    return int(
        conn.execute(
            update(webhook_events)
            .where(webhook_events.c.status == "pending")
            .values(next_attempt_at=null())
        ).rowcount
    )


def _pending(row: Any, now: datetime) -> Pending | None:
    try:
        payload = json.loads(row.payload or "")
        thin = ThinEvent.from_payload(payload, received_at=now)
    except (ValueError, TypeError):
        return None
    if thin.related_type is None or thin.related_id is None:
        return None
    related = payload.get("related_object")
    if isinstance(related, dict) and not isinstance(related.get("url"), str):
        # The library fetches the URL the notification gives; rebuild it when it is missing.
        path = RESOURCE_PATHS[thin.related_type]
        related["url"] = f"/v1/{path}/{thin.related_id}"
    return Pending(
        id=row.id,
        created=int(row.created),
        livemode=bool(row.livemode),
        attempts=int(row.attempts),
        payload=json.dumps(payload),
        thin=thin,
    )


def _settled_events(conn: Connection, event_ids: set[str | None]) -> set[str]:
    ids = [event_id for event_id in event_ids if event_id is not None]
    if not ids:
        return set()
    rows = conn.execute(
        select(webhook_events.c.id).where(
            webhook_events.c.id.in_(ids), webhook_events.c.status.in_(sorted(SETTLED_STATUSES))
        )
    )
    return set(rows.scalars())


def _state_times(conn: Connection, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """The `state_created` of each object the store holds, by (kind, id)."""
    wanted: dict[str, set[str]] = {}
    for kind, object_id in keys:
        wanted.setdefault(kind, set()).add(object_id)
    stored: dict[tuple[str, str], int] = {}
    for kind, ids in wanted.items():
        table = TABLES[kind]
        rows = conn.execute(
            select(table.c.id, table.c.state_created).where(table.c.id.in_(sorted(ids)))
        )
        for object_id, state_created in rows:
            stored[(kind, object_id)] = int(state_created)
    return stored


# What settling a pending thin event writes: processed, its payload and claim gone.
_SETTLED = {
    "status": "processed",
    "error": null(),
    "payload": null(),
    "claimed_by": null(),
    "claimed_until": null(),
    "next_attempt_at": null(),
}
# Rows per write transaction: on SQLite a short hold of its one write lock keeps webhook
# answers fast (a 500-row update held it for 60 ms).
WRITE_CHUNK = 50


def _failed(reason: str) -> dict[str, Any]:
    return {
        "status": "failed",
        "error": reason[:MAX_ERROR_LENGTH],
        "processed_at": null(),
        "claimed_by": null(),
        "claimed_until": null(),
        "next_attempt_at": null(),
    }


def _chunks(items: Sequence[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), WRITE_CHUNK):
        yield list(items[start : start + WRITE_CHUNK])


def _mark_settled(conn: Connection, event_ids: Sequence[str], holder: str, now: datetime) -> None:
    """Settle events this resolver holds."""
    if not event_ids:
        return
    events = webhook_events.c
    conn.execute(
        update(webhook_events)
        .where(
            events.id.in_(list(event_ids)),
            events.status == "pending",
            events.claimed_by == holder,
        )
        .values(**_SETTLED, processed_at=now)
    )
