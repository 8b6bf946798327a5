"""The alerts' rows: each rule's state, and every alert with its attempts per channel."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from finance_core.store.db import insert_for, read_transaction, write_transaction
from finance_core.store.models import ALERT_STATE_OK, alert_deliveries, alert_rules, alerts

MAX_PAGE_SIZE = 200
# The morning digest's rule: its alerts go to DIGEST_URLS, and its state is the local day of
# the last digest sent (the claim that sends it once a day).
DIGEST_RULE = "digest"


@dataclass(frozen=True, slots=True)
class RuleState:
    """A rule's stored state: ALERT_STATE_OK, or the state its condition started in."""

    state: str
    changed_at: datetime | None

    @property
    def active(self) -> bool:
        return self.state != ALERT_STATE_OK


NEVER_ALERTED = RuleState(ALERT_STATE_OK, None)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One attempt to send an alert to one channel."""

    channel: int
    channel_name: str
    attempt: int
    attempted_at: datetime
    outcome: str
    detail: str | None


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """An alert as kept: what it said, and how each channel took it."""

    id: int
    created_at: datetime
    rule: str
    kind: str
    state: str
    title: str
    body: str
    status: str
    triggered_by: str | None
    deliveries: tuple[Delivery, ...] = ()


@dataclass(frozen=True, slots=True)
class AlertPage:
    """A page of alerts, newest first; `older` is the `before` of the next page, if any."""

    alerts: list[AlertRecord]
    older: int | None


def rule_states(*, conn: Connection) -> dict[str, RuleState]:
    """Every rule's stored state (a rule never changed is not there: NEVER_ALERTED)."""
    rows = conn.execute(select(alert_rules.c.rule, alert_rules.c.state, alert_rules.c.changed_at))
    return {row.rule: RuleState(row.state, row.changed_at) for row in rows}


def lock_rule(*, conn: Connection, rule: str, now: datetime) -> RuleState:
    """The rule's state, its row locked until the transaction ends (created if missing).

    On PostgreSQL a second process waits here for the first to commit, then reads the state
    the first left; on SQLite the write transaction already holds the lock.
    """
    conn.execute(
        insert_for(conn, alert_rules)
        .values(rule=rule, state=ALERT_STATE_OK, changed_at=now)
        .on_conflict_do_nothing(index_elements=["rule"])
    )
    row = conn.execute(
        select(alert_rules.c.state, alert_rules.c.changed_at)
        .where(alert_rules.c.rule == rule)
        .with_for_update()
    ).one()
    return RuleState(row.state, row.changed_at)


def change_rule(*, conn: Connection, rule: str, old: str, new: str, now: datetime) -> bool:
    """Move the rule from `old` to `new`; False if its state is no longer `old` (the claim)."""
    changed = conn.execute(
        update(alert_rules)
        .where(alert_rules.c.rule == rule, alert_rules.c.state == old)
        .values(state=new, changed_at=now)
        .returning(alert_rules.c.rule)
    ).first()
    return changed is not None


def add_alert(
    *,
    conn: Connection,
    rule: str,
    kind: str,
    state: str,
    title: str,
    body: str,
    now: datetime,
    hold: timedelta | None,
    triggered_by: str | None = None,
) -> AlertRecord:
    """Keep an alert; with a `hold` it is this process's to send until `now + hold`.

    Without one there is no channel to send it to: it is kept as unsent.
    """
    values: dict[str, Any] = {
        "created_at": now,
        "rule": rule,
        "kind": kind,
        "state": state,
        "title": title,
        "body": body,
        "status": "unsent" if hold is None else "sending",
        "triggered_by": triggered_by,
        "claimed_until": None if hold is None else now + hold,
    }
    new_id = conn.execute(alerts.insert().values(values).returning(alerts.c.id)).scalar_one()
    return _record({**values, "id": new_id}, ())


def take_stalled(
    *, engine: Engine, now: datetime, hold: timedelta, digests: bool = False
) -> list[AlertRecord]:
    """Alerts whose sender stopped before finishing, now this process's to send.

    Digests (which go to their own channels) or the other alerts, as `digests` says. A read
    first, so that the usual case (none) takes no write lock; then one conditional update
    that only one process can win per alert.
    """
    of_digests = alerts.c.rule == DIGEST_RULE if digests else alerts.c.rule != DIGEST_RULE
    stalled = (alerts.c.status == "sending") & (alerts.c.claimed_until < now) & of_digests
    with read_transaction(engine) as conn:
        if conn.execute(select(alerts.c.id).where(stalled).limit(1)).first() is None:
            return []
    with write_transaction(engine) as conn:
        rows = conn.execute(
            update(alerts).where(stalled).values(claimed_until=now + hold).returning(*alerts.c)
        ).all()
    return [_record(row._mapping, ()) for row in rows]


def record_attempt(
    *,
    engine: Engine,
    alert_id: int,
    channel: int,
    channel_name: str,
    attempt: int,
    outcome: str,
    detail: str,
    now: datetime,
) -> None:
    """Keep what one attempt to send an alert to one channel did."""
    with write_transaction(engine) as conn:
        conn.execute(
            alert_deliveries.insert().values(
                alert_id=alert_id,
                channel=channel,
                channel_name=channel_name,
                attempt=attempt,
                attempted_at=now,
                outcome=outcome,
                detail=detail or None,
            )
        )


def sent_channels(*, conn: Connection, alert_id: int) -> set[int]:
    """The channels that already took this alert (a second sender skips them)."""
    rows = conn.execute(
        select(alert_deliveries.c.channel).where(
            alert_deliveries.c.alert_id == alert_id, alert_deliveries.c.outcome == "sent"
        )
    )
    return {row.channel for row in rows}


def finish_alert(*, engine: Engine, alert_id: int, status: str) -> None:
    """Settle an alert's sending: `sent` (every channel took it) or `failed`."""
    with write_transaction(engine) as conn:
        conn.execute(
            update(alerts).where(alerts.c.id == alert_id).values(status=status, claimed_until=None)
        )


def alert_page(*, conn: Connection, limit: int, before: int | None = None) -> AlertPage:
    """Alerts newest first, with their attempts, `limit` at a time (keyset on the id)."""
    limit = max(1, min(limit, MAX_PAGE_SIZE))
    query = select(*alerts.c).order_by(alerts.c.id.desc()).limit(limit + 1)
    if before is not None:
        query = query.where(alerts.c.id < before)
    rows = [row._mapping for row in conn.execute(query)]
    page, more = rows[:limit], len(rows) > limit
    attempts = _deliveries(conn, [row["id"] for row in page])
    return AlertPage(
        [_record(row, attempts.get(row["id"], ())) for row in page],
        page[-1]["id"] if more else None,
    )


def get_alert(*, conn: Connection, alert_id: int) -> AlertRecord:
    """One alert with its attempts."""
    row = conn.execute(select(*alerts.c).where(alerts.c.id == alert_id)).one()._mapping
    return _record(row, _deliveries(conn, [alert_id]).get(alert_id, ()))


def _deliveries(conn: Connection, alert_ids: Sequence[int]) -> dict[int, tuple[Delivery, ...]]:
    if not alert_ids:
        return {}
    rows = conn.execute(
        select(*alert_deliveries.c)
        .where(alert_deliveries.c.alert_id.in_(alert_ids))
        .order_by(alert_deliveries.c.alert_id, alert_deliveries.c.id)
    )
    found: dict[int, list[Delivery]] = {}
    for row in rows:
        found.setdefault(row.alert_id, []).append(
            Delivery(
                row.channel,
                row.channel_name,
                row.attempt,
                row.attempted_at,
                row.outcome,
                row.detail,
            )
        )
    return {alert_id: tuple(items) for alert_id, items in found.items()}


def _record(row: Any, deliveries: tuple[Delivery, ...]) -> AlertRecord:
    return AlertRecord(
        id=row["id"],
        created_at=row["created_at"],
        rule=row["rule"],
        kind=row["kind"],
        state=row["state"],
        title=row["title"],
        body=row["body"],
        status=row["status"],
        triggered_by=row["triggered_by"],
        deliveries=deliveries,
    )
