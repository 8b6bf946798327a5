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
also coalesces a burst of changes to one object. Fetch threads only fetch; the cycle's thread
writes what they bring, several objects to a write transaction (a savepoint each when one of
them cannot be applied), so that SQLite's write lock is taken once for several objects.
Claims are `thin_claims`; fetching, pacing and what Stripe's answers mean are
`thin_fetching`. A fault of Redis or the database is waited out (`finance_core.transient`);
only an object we cannot read fails its events.
"""

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine

from finance_core.access.audit import record_action
from finance_core.feed.events import StripeEvent
from finance_core.feed.handlers import API_STATE_EVENT_TYPES, DELETED_EVENT_TYPES, HANDLERS
from finance_core.feed.thin_claims import (
    CLAIM_LEASE,
    Pending,
    ThinClaims,
    make_all_due,
    mark_settled,
    state_times,
)
from finance_core.feed.thin_fetching import (
    NO_KEY,
    Backoff,
    FetchingClients,
    NotFound,
    Pacer,
    Retry,
    fetch_object,
)
from finance_core.log_text import loggable
from finance_core.settings import Settings
from finance_core.store.db import write_transaction
from finance_core.store.leases import holder_name
from finance_core.transient import is_transient

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
# As sync: an API answer holds every change made a second before it was read.
STATE_MARGIN_S = 1
# Work claimed at once: about five seconds of fetches at the configured pace.
BATCH_SECONDS_OF_FETCHES = 5
FETCH_THREADS = 8
# Fetched objects applied in one write transaction: at most this many, and none kept waiting
# longer than APPLY_AFTER_S for others. A batch of 10 held SQLite's write lock 6-19 ms at the
# p99 on a busy 2-core machine, 20 twice that (docs/performance.md, the resolver's CPU).
APPLY_BATCH = 10
APPLY_AFTER_S = 0.2
NO_KEY_RETRY = timedelta(seconds=30)
DEPENDENCY_AWAY = "waiting for the rate-limit storage or the database ({detail}); retrying"
MAX_OUTAGE_WAIT_S = 10.0
DEPENDENCY_RETRY_S = 2.0

Clock = Callable[[], datetime]


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

    def add(self, other: "CycleReport") -> None:
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(eq=False)
class Fetched:
    """An object read from Stripe (None: Stripe has no such object) and the events it covers."""

    kind: str
    object_id: str
    obj: dict[str, Any] | None
    newest: Pending
    events: list[Pending]
    read_at: datetime

    @property
    def key(self) -> tuple[str, str]:
        return self.kind, self.object_id

    @property
    def state_created(self) -> int:
        """When the state read is dated: a second before it was read (STATE_MARGIN_S)."""
        return int(self.read_at.timestamp()) - STATE_MARGIN_S

    @property
    def gone(self) -> bool:
        """Whether the object no longer exists at Stripe (no later change can come)."""
        return self.obj is None or self.obj.get("deleted") is True


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
        self.claims = ThinClaims(engine, self.holder, self.batch_size)
        self.clients = FetchingClients(settings) if settings.stripe_api_key is not None else None
        self.pacer = Pacer(self.rate, settings.rate_limit_storage_uri)
        self.backoff = Backoff()
        self.pool = ThreadPoolExecutor(FETCH_THREADS, thread_name_prefix="thin-fetch")
        self._claimed_at = clock()

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.claims.release_all()

    def run_once(self) -> CycleReport:
        """Read what is due, settle what the store covers, claim and fetch the rest; wait."""
        now = self.clock()
        report = CycleReport()
        due = self.claims.due(now)
        report.claimed = len(due)
        if not due:
            return report
        by_object: dict[tuple[str, str], list[Pending]] = {}
        for pending in due:
            by_object.setdefault(pending.key, []).append(pending)
        covered = self.claims.covered(by_object)
        self.claims.settle_free([p.id for p in covered], now)
        report.settled_without_fetch = len(covered)
        covered_ids = {p.id for p in covered}
        to_fetch = {}
        for key, events in by_object.items():
            rest = [p for p in events if p.id not in covered_ids]
            if rest:
                to_fetch[key] = rest
        if not to_fetch:
            return report
        if self.clients is None:
            waiting = [p for rest in to_fetch.values() for p in rest]
            self.claims.wait_free(waiting, now, next_attempt=now + NO_KEY_RETRY, reason=NO_KEY)
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
            self.claims.wait_free(rest, now, next_attempt=ready)
            report.waiting += len(rest)
        won = self.claims.claim([p for rest in fetchable.values() for p in rest], now)
        self._claimed_at = now
        fetched: queue.SimpleQueue[Future[Fetched | CycleReport]] = queue.SimpleQueue()
        futures = []
        for key, rest in fetchable.items():
            ours = [p for p in rest if p.id in won]
            if ours:  # another resolver may have taken some of them meanwhile
                futures.append(self.pool.submit(self._fetch, key, ours))
                futures[-1].add_done_callback(fetched.put)
        try:
            self._apply_as_fetched(fetched, len(futures), report)
        except BaseException:
            # The database is away: fetch nothing more that could not be written now (the
            # events stay claimed until the lease lapses, then are fetched again).
            for future in futures:
                future.cancel()
            raise
        return report

    def _apply_as_fetched(
        self,
        fetched: "queue.SimpleQueue[Future[Fetched | CycleReport]]",
        fetching: int,
        report: CycleReport,
    ) -> None:
        """Apply the objects in batches as the fetch threads bring them (`fetching` of them).

        A batch is one write transaction: `APPLY_BATCH` objects, or fewer once the first of
        them has waited `APPLY_AFTER_S`, or the last ones. On SQLite its write lock is then
        taken once for several objects and held for a few milliseconds.
        """
        batch: list[Fetched] = []
        first_at = 0.0
        while fetching or batch:
            if fetching:
                timeout = None
                if batch:
                    timeout = max(0.0, first_at + APPLY_AFTER_S - time.monotonic())
                try:
                    outcome = fetched.get(timeout=timeout).result()  # a database fault: raised
                except queue.Empty:
                    pass
                else:
                    fetching -= 1
                    if isinstance(outcome, CycleReport):
                        report.add(outcome)
                    else:
                        if not batch:
                            first_at = time.monotonic()
                        batch.append(outcome)
            if batch and (
                len(batch) >= APPLY_BATCH
                or not fetching
                or time.monotonic() >= first_at + APPLY_AFTER_S
            ):
                report.add(self._apply(batch))
                batch = []

    @staticmethod
    def _coverable(events: Sequence[Pending], now: datetime) -> bool:
        return any(p.created < int(now.timestamp()) - STATE_MARGIN_S for p in events)

    def _keep_claim(self, events: Sequence[Pending]) -> None:
        """Renew the lease on these events when their batch has run for half of it."""
        now = self.clock()
        if now - self._claimed_at < CLAIM_LEASE / 2:
            return
        self.claims.renew(events, until=now + CLAIM_LEASE)

    def _fetch(self, key: tuple[str, str], events: list[Pending]) -> Fetched | CycleReport:
        """In a fetch thread: the object, or what became of its events when there is none."""
        kind, object_id = key
        newest = max(events, key=lambda p: (p.created, p.id))
        assert self.clients is not None  # run_once fetches nothing without a key
        try:
            pause = self.backoff.pause_left()
            if pause > 0:  # waiting out a 429 or an outage another fetch ran into
                raise Retry(None, pause, failed_request=False)
            try:
                self._keep_claim(events)
                self.pacer.wait_turn()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                # Redis or the database is away: not the events' fault. They wait, and the
                # claim lapses by itself if the database cannot even take them back.
                # Stripe's backoff is not involved: Stripe was not asked, and its waits grow
                # to minutes, which would hold the events long after Redis is back.
                delay = DEPENDENCY_RETRY_S * random.uniform(0.5, 1.0)
                raise Retry(
                    DEPENDENCY_AWAY.format(detail=_first_line(exc)), delay, failed_request=False
                ) from None
            read_at = self.clock()
            obj = fetch_object(self.clients.get(), newest, self.backoff)
        except NotFound:
            self.backoff.succeeded()
            return Fetched(kind, object_id, None, newest, events, read_at)
        except Retry as retry:
            if retry.failed_request:
                self.backoff.failed(retry.delay_s)
            when = self.clock() + timedelta(seconds=retry.delay_s)
            self.claims.release(
                events, next_attempt=when, reason=retry.reason, count_attempt=retry.failed_request
            )
            return CycleReport(waiting=len(events))
        except Exception as exc:  # the library could not read our own stored payload
            if is_transient(exc):
                raise  # met below the library: waited out by resolve_forever, claims lapse
            log.exception(
                "thin event %s: fetching %s %s failed",
                loggable(newest.id),
                loggable(kind),
                loggable(object_id),
            )
            self.claims.fail([p.id for p in events], f"{type(exc).__name__}: {exc}")
            return CycleReport(failed=len(events))
        self.backoff.succeeded()
        return Fetched(kind, object_id, obj, newest, events, read_at)

    def _apply(self, batch: Sequence[Fetched]) -> CycleReport:
        """Write the objects' states (or deletions) and settle the events they cover, in one
        transaction.

        Tried first with no savepoints (SQLAlchemy's SAVEPOINT and RELEASE cost a third of
        the batch's CPU); if an object's handler raises, the batch is rolled back and written
        again with each handler in a savepoint of its own, so that an object we cannot read
        fails its own events only. A fault of the database rolls back the whole batch and
        marks nothing failed: its events stay claimed until the lease lapses.
        """
        if len(batch) > 1:
            try:
                with write_transaction(self.engine) as conn:
                    return self._apply_in(conn, batch, savepoints=False)
            except Exception as exc:
                if is_transient(exc):
                    raise
        with write_transaction(self.engine) as conn:
            return self._apply_in(conn, batch, savepoints=True)

    def _apply_in(
        self, conn: Connection, batch: Sequence[Fetched], *, savepoints: bool
    ) -> CycleReport:
        report = CycleReport()
        now = self.clock()
        applied = [item for item in batch if self._apply_one(conn, item, now, savepoints)]
        live = {item.key: item.events for item in applied if not item.gone}
        stored = state_times(conn, live) if live else {}
        settled: list[str] = []
        for item in applied:
            if item.gone:
                done = item.events  # the object no longer exists: nothing more can change
            else:
                bound = max(item.state_created, stored.get(item.key, item.state_created))
                done = [p for p in item.events if p.created < bound]
            settled.extend(p.id for p in done)
            if item.obj is None:
                report.not_found += 1
            else:
                report.fetched_objects += 1
            report.settled_by_fetch += len(done)
            done_ids = {p.id for p in done}
            rest = [p for p in item.events if p.id not in done_ids]
            if rest:  # changed again since it was read: fetched again once coverable
                newest_rest = max(p.created for p in rest)
                ready = datetime.fromtimestamp(newest_rest + STATE_MARGIN_S + 1, UTC)
                self.claims.release_in(conn, rest, next_attempt=ready)
                report.waiting += len(rest)
        failed = [p for item in batch if item not in applied for p in item.events]
        report.failed += len(failed)
        mark_settled(conn, settled, self.holder, now)
        return report

    def _apply_one(self, conn: Connection, item: Fetched, now: datetime, savepoint: bool) -> bool:
        """Apply one object; in a savepoint, False (its events failed) if it cannot be read."""
        obj = item.obj
        event_type: str | None = None
        if obj is not None:
            event_type = API_STATE_EVENT_TYPES[item.kind]
        else:
            event_type = DELETED_EVENT_TYPES.get(item.kind)
            obj = {"id": item.object_id, "object": item.kind, "deleted": True}
        if event_type is None:  # a subscription gone at Stripe: nothing to apply
            return True
        state = StripeEvent(
            id=item.newest.id,
            type=event_type,
            created=item.state_created,
            livemode=item.newest.livemode,
            api_version=None,
            object=obj,
        )
        if not savepoint:  # whatever it raises rolls the batch back (see _apply)
            HANDLERS[event_type](conn, state, now)
            return True
        try:
            with conn.begin_nested():
                HANDLERS[event_type](conn, state, now)
        except Exception as exc:  # an object we cannot read: kept as failed
            if is_transient(exc):
                raise  # the database, not the object: nothing is marked failed
            error = f"{item.kind} {item.object_id} from Stripe: {type(exc).__name__}: {exc}"
            self.claims.fail_in(conn, [p.id for p in item.events], error)
            return False
        return True


def resolve_forever(
    *, engine: Engine, settings: Settings, stop: threading.Event, round_done: Callable[[], None]
) -> None:
    """The listener's background job: resolve pending thin events until `stop`.

    `round_done` is called after each pass over what is due (the listener's metrics).
    """
    resolver = Resolver(engine=engine, settings=settings)
    if resolver.clients is None:
        log.warning("STRIPE_API_KEY is not set: thin events are stored but not resolved")
    else:
        # A key (or a new one) at start: what waited for one, or backs off, is due now.
        with write_transaction(engine) as conn:
            make_all_due(conn)
    outage = Backoff(first_s=POLL_SECONDS, max_s=MAX_OUTAGE_WAIT_S)
    try:
        while not stop.is_set():
            try:
                report = resolver.run_once()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                outage.failed(0)
                if outage.failures_in_a_row == 1:
                    log.warning("resolving thin events waits: %s", _first_line(exc))
                stop.wait(outage.delay(outage.failures_in_a_row))
                continue
            round_done()
            if outage.failures_in_a_row:
                log.info("resolving thin events again")
                outage.succeeded()
            if report.claimed == 0 or report.claimed == report.waiting:
                stop.wait(POLL_SECONDS)
    finally:
        resolver.close()


def retry_pending_now(*, engine: Engine, actor: str, now: datetime) -> int:
    """An admin's "Resolve now": every waiting thin event due at once; how many (audited)."""
    with write_transaction(engine) as conn:
        due = make_all_due(conn)
        record_action(
            conn,
            actor=actor,
            action="thin_events_retried",
            target="pending thin events",
            detail=f"{due} made due at once",
            now=now,
        )
    return due


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]
