"""A measure sampled once a minute over the last hour, for rules about how fast it moves."""

from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, delete, func, select

from finance_core.store.db import insert_for, read_transaction, write_transaction
from finance_core.store.models import alert_samples

SAMPLE_EVERY = timedelta(minutes=1)
KEEP_SAMPLES = timedelta(hours=1) + SAMPLE_EVERY


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
