"""`python -m finance_core sync`: backfill and reconcile the store from Stripe's API.

Webhooks are the feed; sync is the backstop for whatever they missed (a new store, an outage,
an endpoint created late). Object states read from the API go through the same handlers and
the same per-object ordering rule as webhooks, dated one second before the run started: the
API answer already holds every change made before then, and a webhook for a change made since
then is newer and wins, whether it arrived before or after the sync wrote.

A subscription read here is dated in the daily history by its own Stripe dates (`start_date`,
`canceled_at`, `ended_at`; migration 0010), so on a fresh store sync reconstructs the days
before the store existed; a change it finds lands on the day of the read.

Each page commits on its own, so an interrupted run keeps what it read and a second run is
safe. Sync is not a webhook delivery: it leaves "last webhook received" and health alone.
"""

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import stripe
from sqlalchemy import Connection, Engine, insert, select, update

from finance_core.access.audit import record_action
from finance_core.feed.events import NotAStripeEvent, Outcome, StripeEvent
from finance_core.feed.handlers import API_STATE_EVENT_TYPES, HANDLERS, Change
from finance_core.feed.ingest import recover_event
from finance_core.feed.stripe_api import (
    PAGE_SIZE,
    ListPage,
    NotFoundAtStripe,
    Pager,
    StripeUnavailable,
)
from finance_core.log_text import loggable
from finance_core.store.db import write_transaction
from finance_core.store.models import invoices, sync_runs

log = logging.getLogger(__name__)

MISSED_EVENTS_LOOKBACK = timedelta(days=30)  # how long Stripe keeps events
STALE_RUN_AFTER = timedelta(hours=12)
MAX_ERRORS_KEPT = 20
KINDS = ("products", "prices", "subscriptions", "invoices")

Progress = Callable[[str], None]


class SyncError(RuntimeError):
    """The sync stopped; what it read until then is kept, and running it again is safe."""


@dataclass
class KindTally:
    fetched: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    kept_newer: int = 0
    failed: int = 0

    def count(self, change: Change) -> None:
        setattr(self, change.value, getattr(self, change.value) + 1)


@dataclass
class EventTally:
    fetched: int = 0
    recovered: int = 0
    already_stored: int = 0
    failed: int = 0


@dataclass
class SyncReport:
    """What one run read and changed; stored with the run as JSON."""

    objects: dict[str, KindTally] = field(default_factory=lambda: {k: KindTally() for k in KINDS})
    missed_events: EventTally = field(default_factory=EventTally)
    failing_invoices_rechecked: int = 0
    failing_invoices_missing_at_stripe: int = 0
    rate_limit_waits: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def changed(self) -> int:
        """Rows created or updated, events recovered."""
        rows = sum(t.created + t.updated for t in self.objects.values())
        return rows + self.missed_events.recovered

    @property
    def failed(self) -> int:
        return sum(t.failed for t in self.objects.values()) + self.missed_events.failed

    def lines(self) -> list[str]:
        """The report in words, a line per part."""
        events = self.missed_events
        lines = [
            f"events Stripe could not deliver (last 30 days): {events.fetched} fetched, "
            f"{events.recovered} recovered, {events.already_stored} already in the store, "
            f"{events.failed} failed"
        ]
        for kind, tally in self.objects.items():
            lines.append(
                f"{kind}: {tally.fetched} fetched, {tally.created} new, {tally.updated} updated, "
                f"{tally.unchanged} unchanged, {tally.kept_newer} kept (newer webhook state), "
                f"{tally.failed} failed"
            )
        lines.append(
            f"failing invoices no longer open at Stripe: {self.failing_invoices_rechecked} "
            f"re-read, {self.failing_invoices_missing_at_stripe} missing at Stripe"
        )
        lines.append(f"rate-limit waits: {self.rate_limit_waits}")
        lines.extend(f"error: {error}" for error in self.errors)
        return lines

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "SyncReport":
        data = json.loads(text)
        return cls(
            objects={k: KindTally(**v) for k, v in data["objects"].items()},
            missed_events=EventTally(**data["missed_events"]),
            failing_invoices_rechecked=data["failing_invoices_rechecked"],
            failing_invoices_missing_at_stripe=data["failing_invoices_missing_at_stripe"],
            rate_limit_waits=data["rate_limit_waits"],
            errors=data["errors"],
        )


@dataclass(frozen=True, slots=True)
class SyncRun:
    id: int
    started_at: datetime
    finished_at: datetime | None
    status: str
    triggered_by: str
    report: SyncReport | None
    error: str | None


def run_sync(
    *,
    engine: Engine,
    client: stripe.StripeClient,
    actor: str,
    pager: Pager | None = None,
    progress: Progress | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> SyncReport:
    """Recover undelivered events, then reconcile products, prices, subscriptions, invoices."""
    started = clock()
    run_id = _start_run(engine, started, actor)
    run = _Sync(engine, client, pager or Pager(), progress or (lambda _: None), clock, started)
    try:
        run.run()
    except StripeUnavailable as exc:
        _finish_run(engine, run_id, clock(), "failed", run.report, str(exc))
        raise SyncError(str(exc)) from None
    except Exception as exc:
        _finish_run(engine, run_id, clock(), "failed", run.report, f"{type(exc).__name__}: {exc}")
        raise
    except BaseException:  # Ctrl-C, or a host such as Streamlit stopping the thread's script
        _finish_run(engine, run_id, clock(), "interrupted", run.report, "interrupted")
        raise
    _finish_run(engine, run_id, clock(), "succeeded", run.report, None)
    return run.report


def latest_runs(*, conn: Connection, limit: int = 10) -> list[SyncRun]:
    """The latest sync runs, newest first."""
    rows = conn.execute(select(sync_runs).order_by(sync_runs.c.id.desc()).limit(limit)).all()
    return [
        SyncRun(
            id=row.id,
            started_at=row.started_at,
            finished_at=row.finished_at,
            status=row.status,
            triggered_by=row.triggered_by,
            report=SyncReport.from_json(row.report) if row.report else None,
            error=row.error,
        )
        for row in rows
    ]


class _Sync:
    def __init__(
        self,
        engine: Engine,
        client: stripe.StripeClient,
        pager: Pager,
        progress: Progress,
        clock: Callable[[], datetime],
        started: datetime,
    ) -> None:
        self.engine, self.client, self.pager = engine, client, pager
        self.progress, self.clock = progress, clock
        self.report = SyncReport()
        # The API answers hold every change made before the run started (see module doc).
        self.state_created = int(started.timestamp()) - 1
        self.state_event_id = f"sync_{started:%Y%m%dT%H%M%SZ}"
        self.since = int((started - MISSED_EVENTS_LOOKBACK).timestamp())

    def run(self) -> None:
        try:
            self._recover_missed_events()
            v1 = self.client.v1
            self._reconcile("products", v1.products.list, {})
            self._reconcile("prices", v1.prices.list, {})
            self._reconcile("subscriptions", v1.subscriptions.list, {"status": "all"})
            open_ids = self._reconcile("invoices", v1.invoices.list, {"status": "open"})
            self._recheck_failing_invoices(open_ids)
        finally:
            self.report.rate_limit_waits = self.pager.rate_limit_waits

    def _recover_missed_events(self) -> None:
        recover_missed_events(
            engine=self.engine,
            client=self.client,
            pager=self.pager,
            since=self.since,
            tally=self.report.missed_events,
            clock=self.clock,
            on_error=self._error,
            progress=self.progress,
        )

    def _reconcile(self, kind: str, list_page: ListPage, params: dict[str, Any]) -> set[str]:
        """Apply every object of a listing, a page per transaction; return the ids seen."""
        seen: set[str] = set()
        tally = self.report.objects[kind]
        page: list[dict[str, Any]] = []
        for obj in self.pager.list_all(list_page, params):
            tally.fetched += 1
            if kind == "invoices":
                seen.add(str(obj.get("id")))
            page.append(obj)
            if len(page) == PAGE_SIZE:
                self._apply_page(kind, page)
                page = []
        if page:
            self._apply_page(kind, page)
        return seen

    def _apply_page(self, kind: str, page: list[dict[str, Any]]) -> None:
        tally = self.report.objects[kind]
        now = self.clock()
        with write_transaction(self.engine) as conn:
            for obj in page:
                try:
                    with conn.begin_nested():
                        tally.count(self._apply_object(conn, obj, now))
                except Exception as exc:  # one bad object must not stop the reconciliation
                    tally.failed += 1
                    self._error(f"{kind[:-1]} {obj.get('id')!r}: {type(exc).__name__}: {exc}")
        self.progress(f"{kind}: {tally.fetched} read")

    def _apply_object(self, conn: Connection, obj: dict[str, Any], now: datetime) -> Change:
        kind = obj.get("object")
        event_type = API_STATE_EVENT_TYPES.get(kind) if isinstance(kind, str) else None
        if event_type is None:
            raise ValueError(f"unexpected object {kind!r}")
        event = StripeEvent(
            id=self.state_event_id,
            type=event_type,
            created=self.state_created,
            livemode=obj.get("livemode") is True,
            api_version=None,
            object=obj,
        )
        return HANDLERS[event_type](conn, event, now, report_change=True)

    def _recheck_failing_invoices(self, open_ids: set[str]) -> None:
        """Invoices the store counts as failing that Stripe no longer lists as open."""
        with self.engine.connect() as conn:
            failing = conn.execute(
                select(invoices.c.id).where(invoices.c.payment_failing)
            ).scalars()
            stale = [invoice_id for invoice_id in failing if invoice_id not in open_ids]
        retrieve = self.client.v1.invoices.retrieve
        for invoice_id in stale:
            try:
                invoice = self.pager.call(partial(retrieve, invoice_id))
            except NotFoundAtStripe:
                self.report.failing_invoices_missing_at_stripe += 1
                self._error(f"failing invoice {invoice_id} is unknown to Stripe; left as it is")
                continue
            self.report.failing_invoices_rechecked += 1
            self._apply_page("invoices", [invoice.to_dict(for_json=True)])

    def _error(self, message: str) -> None:
        log.warning("sync: %s", loggable(message))
        if len(self.report.errors) < MAX_ERRORS_KEPT:
            self.report.errors.append(message[:500])


def recover_missed_events(
    *,
    engine: Engine,
    client: stripe.StripeClient,
    pager: Pager,
    since: int,
    tally: EventTally,
    clock: Callable[[], datetime],
    on_error: Callable[[str], None],
    progress: Progress | None = None,
) -> None:
    """Apply the events Stripe could not deliver (`delivery_success=false`) created since
    `since` (Unix time) that the store lacks, as a delivery would; count them in `tally`.

    Used by `sync` and by the feed check (`finance_core.feed.feed_check`).
    """
    params = {"delivery_success": False, "created": {"gte": since}}
    for payload in pager.list_all(client.v1.events.list, params):
        tally.fetched += 1
        try:
            event = StripeEvent.from_payload(payload)
        except NotAStripeEvent as exc:
            tally.failed += 1
            on_error(f"event {payload.get('id')!r} from Stripe is unreadable: {exc}")
            continue
        result = recover_event(
            engine=engine, event=event, now=clock(), raw_payload=json.dumps(payload)
        )
        if result.outcome is Outcome.FAILED:
            tally.failed += 1
            on_error(f"event {event.id} ({event.type}) failed: {result.error}")
        elif result.outcome is Outcome.DUPLICATE:
            tally.already_stored += 1
        else:
            tally.recovered += 1
        if progress is not None and tally.fetched % PAGE_SIZE == 0:
            progress(f"missed events: {tally.fetched} read")


def _start_run(engine: Engine, started: datetime, actor: str) -> int:
    with write_transaction(engine) as conn:
        # A run whose process was killed never finished: say so instead of "running" forever.
        conn.execute(
            update(sync_runs)
            .where(
                sync_runs.c.status == "running", sync_runs.c.started_at < started - STALE_RUN_AFTER
            )
            .values(status="interrupted", error="never finished (process stopped)")
        )
        run_id = int(
            conn.execute(
                insert(sync_runs)
                .values(started_at=started, status="running", triggered_by=actor[:255])
                .returning(sync_runs.c.id)
            ).scalar_one()
        )
        record_action(
            conn,
            actor=actor,
            action="sync_run",
            target=f"sync run {run_id}",
            detail="started; its report is kept with the run",
            now=started,
        )
        return run_id


def _finish_run(
    engine: Engine,
    run_id: int,
    finished: datetime,
    status: str,
    report: SyncReport,
    error: str | None,
) -> None:
    with write_transaction(engine) as conn:
        conn.execute(
            update(sync_runs)
            .where(sync_runs.c.id == run_id)
            .values(finished_at=finished, status=status, report=report.to_json(), error=error)
        )
