"""Reprocess failed events: from their kept payloads, or re-fetched from Stripe when the key is set.

The dashboard's Replay button and `python -m finance_core replay` both come here. Each attempt
is audited with its outcome, just after it: a replay commits in the ingest path's own
transaction, whose outcome (processed, or failed again) is what the entry records.
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import stripe
from sqlalchemy import Engine, select

from finance_core.access.audit import record
from finance_core.feed.events import Outcome
from finance_core.feed.ingest import ReplayError, failed_event_ids, replay_event
from finance_core.feed.stripe_api import NotFoundAtStripe, Pager, StripeUnavailable, fetch_event
from finance_core.store.models import webhook_events


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    event_id: str
    ok: bool
    message: str


def replay_events(
    *,
    engine: Engine,
    event_ids: Iterable[str] | None,
    actor: str,
    now: datetime,
    client: stripe.StripeClient | None = None,
    pager: Pager | None = None,
) -> list[ReplayOutcome]:
    """Replay the named events, or every failed one; one outcome each, in order."""
    ids = list(event_ids) if event_ids is not None else failed_event_ids(engine=engine)
    pager = pager or Pager()
    outcomes = []
    for event_id in ids:
        outcome = _replay_one(engine, event_id, now, client, pager)
        record(
            engine=engine,
            actor=actor,
            action="event_replayed",
            target=event_id,
            detail=("" if outcome.ok else "not applied: ") + outcome.message,
            now=now,
        )
        outcomes.append(outcome)
    return outcomes


def _replay_one(
    engine: Engine,
    event_id: str,
    now: datetime,
    client: stripe.StripeClient | None,
    pager: Pager,
) -> ReplayOutcome:
    payload: str | None = None
    if client is not None and not _has_kept_payload(engine, event_id):
        try:
            payload = json.dumps(fetch_event(client, pager, event_id))
        except NotFoundAtStripe:
            return ReplayOutcome(event_id, False, "no kept payload, and Stripe no longer has it")
        except StripeUnavailable as exc:
            return ReplayOutcome(event_id, False, f"no kept payload, and {exc}")
    try:
        result = replay_event(engine=engine, event_id=event_id, now=now, payload=payload)
    except ReplayError as exc:
        return ReplayOutcome(event_id, False, str(exc))
    if result.outcome is Outcome.FAILED:
        return ReplayOutcome(event_id, False, f"failed again: {result.error}")
    source = "payload re-fetched from Stripe" if payload is not None else "kept payload"
    return ReplayOutcome(event_id, True, f"{result.outcome.value} ({source})")


def _has_kept_payload(engine: Engine, event_id: str) -> bool:
    with engine.connect() as conn:
        payload = conn.execute(
            select(webhook_events.c.payload).where(webhook_events.c.id == event_id)
        ).scalar()
    return bool(payload)
