"""Re-dating the daily history by Stripe's dates (migration 0012) on a store of a million
subscriptions, on SQLite and PostgreSQL: wall time and this process's memory growth.

The store is filled at revision 0009 (its triggers dating the history by when the store saw
each subscription, spread over 400 days), then upgraded to the head: 0012 sets the
subscriptions' dates in two UPDATEs and recounts the whole history in one INSERT ... SELECT ...
GROUP BY, 0015 folds it into a row per day and plan (0010, 0011, 0013 and 0014 change alerts,
invoices and the feed check, not the history): set-based, no row goes through Python. Target:
under 60 s and under 200 MB of growth. On PostgreSQL the work is the server's; the growth
reported is this (client) process's.
"""

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from alembic import command
from sqlalchemy import Engine, func, literal, select, text

from finance_core.store import migrate
from finance_core.store.db import make_engine
from finance_core.store.models import (
    HISTORY_STATUSES,
    OTHER_STATUSES,
    subscription_counts,
    subscription_history,
)
from tests.support.postgres import PostgresServer, find_pg_bin

TARGET_S = 60
TARGET_GROWTH_MB = 200
BEFORE, REVISION = "0009_history_retention", "head"
FILL_BATCH = 10_000

_STATUS = (
    "CASE i % 10 WHEN 0 THEN 'canceled' WHEN 1 THEN 'canceled' WHEN 2 THEN 'trialing' "
    "WHEN 3 THEN 'past_due' ELSE 'active' END"
)
FILL = {
    "sqlite": f"""
        WITH RECURSIVE n(i) AS (SELECT :first UNION ALL SELECT i + 1 FROM n WHERE i + 1 < :end)
        INSERT INTO subscriptions
            (id, status, product_id, livemode, state_created, state_event_id, updated_at)
        SELECT 'sub_bench_' || i, {_STATUS}, 'prod_bench_' || (i % 20), 0, 1700000000 + i,
               'evt_bench', datetime('2025-11-01', '+' || (i % 400) || ' days',
                                     '+' || (i % 86400) || ' seconds')
        FROM n
    """,
    "postgresql": f"""
        INSERT INTO subscriptions
            (id, status, product_id, livemode, state_created, state_event_id, updated_at)
        SELECT 'sub_bench_' || i, {_STATUS}, 'prod_bench_' || (i % 20), false, 1700000000 + i,
               'evt_bench', timestamp '2025-11-01' + (i % 400) * interval '1 day'
                                                   + (i % 86400) * interval '1 second'
        FROM generate_series(:first, :end - 1) AS i
    """,
}


def _rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _to(engine: Engine, revision: str) -> None:
    config = migrate._config()
    with engine.connect() as conn, conn.begin():
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def rebuild(database_url: str, subscriptions_n: int) -> dict[str, Any]:
    """Fill a 0009 store with `subscriptions_n` subscriptions, then time the upgrade to the head."""
    engine = make_engine(database_url)
    _to(engine, BEFORE)
    started = time.perf_counter()
    # In transactions of FILL_BATCH: on PostgreSQL each of the 0009 triggers' count rows is
    # updated once per subscription, and one transaction's versions of a row pile up (a
    # million rows in one transaction ran for over 15 minutes; the 50,000 before, seconds).
    for first in range(0, subscriptions_n, FILL_BATCH):
        end = min(first + FILL_BATCH, subscriptions_n)
        with engine.begin() as conn:
            conn.execute(text(FILL[engine.dialect.name]), {"first": first, "end": end})
    fill_s = time.perf_counter() - started
    rss_before = _rss_mb()
    started = time.perf_counter()
    _to(engine, REVISION)
    upgrade_s = time.perf_counter() - started
    growth = _rss_mb() - rss_before
    with engine.connect() as conn:
        history_rows = conn.execute(select(func.count()).select_from(subscription_history)).scalar()
        every_status = sum(
            (subscription_history.c[name] for name in (*HISTORY_STATUSES, OTHER_STATUSES)),
            start=literal(0),
        )
        total = conn.execute(select(func.sum(every_status))).scalar()
        counted = conn.execute(select(func.sum(subscription_counts.c.subscription_count))).scalar()
    engine.dispose()
    assert total == counted == subscriptions_n, (total, counted)  # the history adds up
    return {
        "subscriptions": subscriptions_n,
        "fill_s": round(fill_s, 1),
        "upgrade_s": round(upgrade_s, 2),
        "rss_growth_mb": round(growth, 1),
        "history_rows": history_rows,
        "targets_met": upgrade_s < TARGET_S and growth < TARGET_GROWTH_MB,
    }


def run(*, subscriptions_n: int, sqlite: bool = True, postgres: bool = True) -> dict[str, Any]:
    result: dict[str, Any] = {}
    workdir = Path(tempfile.mkdtemp(prefix="bench-history-"))
    try:
        if sqlite:
            result["sqlite"] = rebuild(f"sqlite:///{workdir}/history.db", subscriptions_n)
        if postgres:
            server = PostgresServer(find_pg_bin())  # type: ignore[arg-type]
            server.start()
            try:
                result["postgresql"] = rebuild(server.create_database("history"), subscriptions_n)
            finally:
                server.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.history_rebuild", description=__doc__)
    parser.add_argument("--subscriptions", type=int, default=1_000_000)
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f}", flush=True)
    result = run(
        subscriptions_n=args.subscriptions,
        sqlite=not args.no_sqlite,
        postgres=not args.no_postgres,
    )
    for backend, figures in result.items():
        met = "met" if figures["targets_met"] else "NOT met"
        print(
            f"  {backend}: {figures['subscriptions']:,} subscriptions re-dated in "
            f"{figures['upgrade_s']:.2f} s, memory +{figures['rss_growth_mb']:.0f} MB, "
            f"{figures['history_rows']:,} history rows (< {TARGET_S} s, "
            f"< {TARGET_GROWTH_MB} MB: {met}); filled in {figures['fill_s']:.0f} s"
        )


if __name__ == "__main__":
    main()
