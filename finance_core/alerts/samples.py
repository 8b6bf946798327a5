"""Measures kept over time: sampled once a minute over the last hour, for rules about how fast
they move; and closed once a day, for the change since yesterday and since a week ago."""

from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Connection, Engine, delete, func, select

from finance_core.store.db import insert_for, read_transaction, write_transaction
from finance_core.store.models import alert_samples

SAMPLE_EVERY = timedelta(minutes=1)
KEEP_SAMPLES = timedelta(hours=1) + SAMPLE_EVERY
# The day's latest failed payments count, one row per UTC day: the Overview's changes.
FAILED_PAYMENTS_DAILY_MEASURE = "failed_payments_daily"


def record_sample(*, engine: Engine, measure: str, value: int, now: datetime) -> None:
    """Sample a measure for this minute (the first sample of a minute stays), trimming old ones.

    A read first: evaluated every second, the rules would otherwise take SQLite's write lock
    from the listener's writer every second, where once a minute will do.
    """
    minute = now.replace(second=0, microsecond=0)
    this_minute = (alert_samples.c.measure == measure) & (alert_samples.c.taken_at == minute)
    with read_transaction(engine) as conn:
        if conn.execute(select(alert_samples.c.measure).where(this_minute)).first() is not None:
            return
    with write_transaction(engine) as conn:
        conn.execute(
            insert_for(conn, alert_samples)
            .values(measure=measure, taken_at=minute, sample_value=value)
            .on_conflict_do_nothing(index_elements=["measure", "taken_at"])
        )
        conn.execute(
            delete(alert_samples).where(
                alert_samples.c.measure == measure, alert_samples.c.taken_at < now - KEEP_SAMPLES
            )
        )


def lowest_sample(*, conn: Connection, measure: str, start: datetime, end: datetime) -> int | None:
    """The lowest sample of a measure taken in [start, end), if any."""
    lowest = conn.execute(
        select(func.min(alert_samples.c.sample_value)).where(
            alert_samples.c.measure == measure,
            alert_samples.c.taken_at >= start,
            alert_samples.c.taken_at < end,
        )
    ).scalar_one()
    return None if lowest is None else int(lowest)


def record_figures(
    *, engine: Engine, figures: dict[str, int], now: datetime, prefix: str, keep: timedelta
) -> None:
    """Keep several measures taken at `now` (to the minute), dropping those of `prefix` older
    than `keep`; a measure already taken this minute stays as it was."""
    minute = now.replace(second=0, microsecond=0)
    with write_transaction(engine) as conn:
        for measure, value in sorted(figures.items()):
            conn.execute(
                insert_for(conn, alert_samples)
                .values(measure=measure, taken_at=minute, sample_value=value)
                .on_conflict_do_nothing(index_elements=["measure", "taken_at"])
            )
        conn.execute(
            delete(alert_samples).where(
                alert_samples.c.measure.startswith(prefix, autoescape=True),
                alert_samples.c.taken_at < now - keep,
            )
        )


def _day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def record_day_figure(*, engine: Engine, measure: str, value: int, now: datetime) -> None:
    """Keep a measure's latest value of the UTC day, so that its row ends as the day's close.

    One row per measure and day, stamped at the day's midnight; kept for good (a row a day).
    A read first, as for the samples: the row is written only when the value changed.
    """
    day = _day_start(now.astimezone(UTC).date())
    this_day = (alert_samples.c.measure == measure) & (alert_samples.c.taken_at == day)
    with read_transaction(engine) as conn:
        kept = conn.execute(select(alert_samples.c.sample_value).where(this_day)).scalar()
    if kept == value:
        return
    with write_transaction(engine) as conn:
        statement = insert_for(conn, alert_samples).values(
            measure=measure, taken_at=day, sample_value=value
        )
        conn.execute(
            statement.on_conflict_do_update(
                index_elements=["measure", "taken_at"], set_={"sample_value": value}
            )
        )


def latest_figures(
    *, conn: Connection, prefix: str, start: datetime, end: datetime
) -> dict[str, int] | None:
    """The measures of `prefix` taken at the latest minute in [start, end); None if none was."""
    named = alert_samples.c.measure.startswith(prefix, autoescape=True)
    in_range = (alert_samples.c.taken_at >= start) & (alert_samples.c.taken_at < end)
    latest = conn.execute(
        select(func.max(alert_samples.c.taken_at)).where(named, in_range)
    ).scalar_one()
    if latest is None:
        return None
    rows = conn.execute(
        select(alert_samples.c.measure, alert_samples.c.sample_value).where(
            named, alert_samples.c.taken_at == latest
        )
    )
    return {row.measure: int(row.sample_value) for row in rows}


def day_close(*, conn: Connection, measure: str, day: date) -> int | None:
    """A measure's value at the end of a UTC day: the last one kept on or before that day.

    None when nothing was kept by then (no listener ran the alert job yet).
    """
    kept = conn.execute(
        select(alert_samples.c.sample_value)
        .where(
            alert_samples.c.measure == measure,
            alert_samples.c.taken_at <= _day_start(day),
        )
        .order_by(alert_samples.c.taken_at.desc())
        .limit(1)
    ).scalar()
    return None if kept is None else int(kept)
